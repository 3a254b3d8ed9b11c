"""Recording runs in MLflow, tolerant of a tracking server that goes away.

One parent run per ``ltrun`` call and one nested run per stage. Metrics are buffered and sent with
``log_batch`` once per epoch (:meth:`Tracker.flush`).

Start and after. Creating the :class:`Tracker` checks the store at once, without MLflow's long
retry schedule (no retries, a timeout of ``LTCORE_TRACKING_START_TIMEOUT`` seconds, 5 by default),
and raises :class:`~ltcore.errors.TrackingError` naming the URI: an unreachable server fails the
run in seconds, before any training. Every call after the start is tolerant: no exception reaches
the training loop. When the store stops answering the tracker goes *offline*: metric values stay
in :attr:`Tracker.pending` (saved with the checkpoint, sent on resume), every other record (params,
tags, run status, artifacts, the dataset input, the logged model, the creation of a stage run) is
queued in order, and each
:meth:`~Tracker.flush` probes the store once (no retries) and, when it answers again, replays the
queue and sends the buffered metrics. A record the store *refuses* (it answered, with an error
such as an invalid value) is dropped and reported; failures are counted, and
:meth:`~Tracker.summary` says what was not logged.

Runs created while offline get a placeholder id (``offline-...``) that describes the run; it is
materialised (created, or found again through its ``ltcore.offline_id`` tag) when the store
answers, also from another process after ``ltrun --resume``.

Extra tags for every run of a process come from ``LTCORE_RUN_TAGS`` (a JSON object) or the
:func:`extra_tags` context manager: sweeps tag their cells that way.
"""

from .store import (DEFAULT_URI, RUN_TAGS_ENV, START_TIMEOUT_ENV, connect, default_uri,
                    describe, experiment_id, extra_run_tags, extra_tags, http_policy,
                    open_store, refused, resolve_uri, retry_locked, source_tags, store_lock)
from .tracker import OFFLINE_PREFIX, SilentTracker, Tracker, dataset_input

__all__ = ["DEFAULT_URI", "OFFLINE_PREFIX", "RUN_TAGS_ENV", "START_TIMEOUT_ENV", "SilentTracker",
           "Tracker", "connect", "dataset_input", "default_uri", "describe", "experiment_id",
           "extra_run_tags", "extra_tags", "http_policy", "open_store", "refused", "resolve_uri",
           "retry_locked", "source_tags", "store_lock"]
