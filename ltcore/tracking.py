"""Recording runs in MLflow, tolerant of a tracking server that goes away.

One parent run per ``ltrun`` call and one nested run per stage. Metrics are buffered and sent with
``log_batch`` once per epoch (:meth:`Tracker.flush`).

Start and after. Creating the :class:`Tracker` checks the store at once, without MLflow's long
retry schedule (no retries, a timeout of ``LTCORE_TRACKING_START_TIMEOUT`` seconds, 5 by default),
and raises :class:`~ltcore.errors.TrackingError` naming the URI: an unreachable server fails the
run in seconds, before any training. Every call after the start is tolerant: no exception reaches
the training loop. When the store stops answering the tracker goes *offline*: metric values stay
in :attr:`Tracker.pending` (saved with the checkpoint, sent on resume), every other record (params,
tags, run status, artifacts, the creation of a stage run) is queued in order, and each
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

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from .errors import TrackingError  # noqa: E402

DEFAULT_URI = "sqlite:///mlflow.db"
MAX_BATCH = 1000
PARAM_LIMIT = 6000
TAG_LIMIT = 5000

RUN_TAGS_ENV = "LTCORE_RUN_TAGS"
"""Environment variable holding a JSON object of extra tags for every run this process creates."""

START_TIMEOUT_ENV = "LTCORE_TRACKING_START_TIMEOUT"
"""Seconds the start check waits for the tracking server (default :data:`START_TIMEOUT`)."""

START_TIMEOUT = 5
"""Default timeout (s) of the start check; it makes no retries."""

RUN_RETRIES, RUN_BACKOFF, RUN_TIMEOUT = 2, 1, 30
"""HTTP policy of calls after the start, unless ``MLFLOW_HTTP_REQUEST_*`` are set: two retries,
back-off factor 1 s, a 30 s timeout (MLflow's own default retries for minutes)."""

PROBE_TIMEOUT = 5
"""Timeout (s) of the single, retry-free request that checks whether an offline store is back."""

MAX_ATTEMPTS = 5
"""A queued record that fails this often while the store answers is given up as refused."""

OFFLINE_PREFIX = "offline-"

REFUSED_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
    "INVALID_STATE", "BAD_REQUEST", "MALFORMED_REQUEST", "PERMISSION_DENIED", "NOT_FOUND",
    "ENDPOINT_NOT_FOUND", "CUSTOMER_UNAUTHORIZED", "UNAUTHENTICATED", "INVALID_STATE_TRANSITION",
})
"""MLflow error codes meaning that the store answered and refused the record (not transient)."""



def _warn(message: str) -> None:
    """Tell the user at once, on stderr (also inside a sweep cell's log)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def default_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the local sqlite store ``sqlite:///mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def resolve_uri(uri: str | None = None) -> str:
    """``uri`` (else :func:`default_uri`) with a relative sqlite path made absolute: MLflow
    caches stores by URI, so a relative one would follow the process's first directory."""
    uri = uri or default_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not os.path.isabs(uri[len(prefix):]):
        uri = prefix + os.path.abspath(uri[len(prefix):])
    return uri


def start_timeout() -> float:
    """The start check's timeout in seconds (``LTCORE_TRACKING_START_TIMEOUT``, default 5)."""
    raw = os.environ.get(START_TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else START_TIMEOUT
    except ValueError as exc:
        raise TrackingError(f"{START_TIMEOUT_ENV}={raw!r} is not a number of seconds") from exc
    return max(1.0, value)


@contextmanager
def http_policy(retries: int, timeout: float, backoff: int = 0,
                override: bool = True) -> Iterator[None]:
    """Set MLflow's HTTP retry count, back-off factor and timeout for the calls inside.

    MLflow reads ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``..._BACKOFF_FACTOR`` and ``..._TIMEOUT``
    at every request. With ``override=False`` a value the user set in the environment wins.
    """
    values = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(retries)),
              "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(int(backoff)),
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(round(timeout))))}
    saved = {}
    for name, value in values.items():
        if override or name not in os.environ:
            saved[name] = os.environ.get(name)
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def extra_run_tags() -> dict[str, str]:
    """The tags ``LTCORE_RUN_TAGS`` adds to every run (a JSON object of strings)."""
    raw = os.environ.get(RUN_TAGS_ENV, "")
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TrackingError(f"{RUN_TAGS_ENV} is not valid JSON: {exc}") from exc
    if not isinstance(tags, dict):
        raise TrackingError(f"{RUN_TAGS_ENV} must be a JSON object of tag -> value")
    return {str(k): str(v) for k, v in tags.items()}


@contextmanager
def extra_tags(tags: dict[str, str]) -> Iterator[None]:
    """Add ``tags`` to every run created inside (merged over ``LTCORE_RUN_TAGS``)."""
    saved = os.environ.get(RUN_TAGS_ENV)
    os.environ[RUN_TAGS_ENV] = json.dumps({**extra_run_tags(), **tags})
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(RUN_TAGS_ENV, None)
        else:
            os.environ[RUN_TAGS_ENV] = saved


TRANSPORT_FAILURES = ("Connection refused", "Read timed out", "timed out", "Connection reset",
                      "Name or service not known", "Temporary failure in name resolution",
                      "No route to host", "Connection aborted", "Remote end closed connection")


def describe(exc: BaseException, limit: int = 300) -> str:
    """A one-line description of a tracking failure (the transport cause first, when known)."""
    text = " ".join(str(exc).split())
    for needle in TRANSPORT_FAILURES:
        if needle in text:
            request = re.search(r"API request to (\S+)", text)
            where = f" ({request.group(1)})" if request else ""
            return f"{type(exc).__name__}: {needle.lower()}{where}"
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{type(exc).__name__}: {text}"


def refused(exc: BaseException) -> bool:
    """True when ``exc`` is the store's answer refusing a record (not a transport failure)."""
    return getattr(exc, "error_code", None) in REFUSED_CODES


def connect(uri: str | None = None):
    """An ``MlflowClient`` on ``uri`` after a quick reachability check; raises TrackingError."""
    from mlflow.tracking import MlflowClient

    uri = resolve_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    with http_policy(retries=0, timeout=start_timeout()):
        try:
            client.search_experiments(max_results=1)
        except Exception as exc:
            raise unreachable(uri, exc) from exc
    return client


def unreachable(uri: str, exc: BaseException) -> TrackingError:
    return TrackingError(f"cannot reach the MLflow tracking store at {uri!r}: {describe(exc)}. "
                         "Start the server (docs/tracking.md), or point --tracking-uri / "
                         "MLFLOW_TRACKING_URI elsewhere")


def experiment_id(client, name: str, create: bool = True) -> str | None:
    """The id of experiment ``name`` (created when missing and ``create``; two processes may
    race to create it, the loser finds the winner's)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if not create:
        return None
    try:
        return client.create_experiment(name)
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _encode_placeholder(name: str, tags: dict[str, str]) -> str:
    payload = json.dumps({"name": name, "tags": tags}, sort_keys=True).encode()
    return OFFLINE_PREFIX + base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _decode_placeholder(run_id: str) -> tuple[str, dict[str, str]]:
    data = run_id[len(OFFLINE_PREFIX):]
    payload = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    return payload["name"], payload["tags"]


def _digest(run_id: str) -> str:
    return hashlib.sha1(run_id.encode()).hexdigest()[:20]


class Tracker:
    """MLflow client for one ``ltrun`` call: the parent run and its stage runs.

    Only the constructor and the start of the parent run raise (:class:`TrackingError`); every
    later call is tolerant, see the module documentation.
    """

    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = resolve_uri(uri)
        self.experiment = experiment
        self.pending: list[tuple[str, str, float, int, int]] = []
        """Metric values not sent yet: (run id, key, value, timestamp ms, step)."""
        self.unsent_artifacts: list[str] = []
        """Paths of artifacts not (yet) logged: queued while offline, or refused."""
        self.failures = 0
        """Tracking calls after the start that did not reach the store (failed, or deferred
        while offline); what they carried is retried or reported."""
        self.refused: list[str] = []
        """Records the store answered with an error; they are not retried."""
        self.offline = False
        self._queue: list[list] = []  # [op, run id, payload, attempts], in call order
        self._resolved: dict[str, str] = {}  # placeholder -> real run id
        self._dedupe: dict[str, str] = {}  # run id -> metric key, checked before sending
        self._parents: set[str] = set()
        self._tags = extra_run_tags()
        self.client = MlflowClient(tracking_uri=self.uri)
        with http_policy(retries=0, timeout=start_timeout()):
            try:
                self.experiment_id = experiment_id(self.client, experiment)
            except Exception as exc:
                raise unreachable(self.uri, exc) from exc

    # -- the calls the engine makes --------------------------------------------------------

    def start(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        """Create a run; the parent run (no ``parent_id``) must succeed, a stage run created
        while the store is away gets a placeholder id and is created when it answers."""
        tags = {**self._tags, **{k: str(v) for k, v in tags.items()}}
        if parent_id is None:
            try:
                with self._policy():
                    run_id = self.client.create_run(self.experiment_id, run_name=name,
                                                    tags=tags).info.run_id
            except Exception as exc:
                raise TrackingError(f"the MLflow tracking store at {self.uri!r} did not create "
                                    f"the run: {describe(exc)}") from exc
            self._parents.add(run_id)
            return run_id
        tags["mlflow.parentRunId"] = parent_id
        if self.offline:
            self.failures += 1
        else:
            try:
                with self._policy():
                    return self.client.create_run(self.experiment_id, run_name=name,
                                                  tags=tags).info.run_id
            except Exception as exc:
                self._failed(exc, None)
        placeholder = _encode_placeholder(name, tags)
        self._queue.append(["create", placeholder, None, 0])
        return placeholder

    def reopen(self, run_id: str) -> None:
        """Mark a resumed run RUNNING again (the first run a tracker reopens, before creating
        any, is its parent run)."""
        if not self._parents and not run_id.startswith(OFFLINE_PREFIX):
            self._parents.add(run_id)
        self._call("status", run_id, "RUNNING")

    def log_params(self, run_id: str, params: dict[str, Any]) -> bool:
        """Log params (values cut at 6000 characters), 100 per request."""
        return self._call("params", run_id, [(k, str(v)[:PARAM_LIMIT]) for k, v in params.items()])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> bool:
        """Set tags (values cut at 5000 characters)."""
        return self._call("tags", run_id, [(k, str(v)[:TAG_LIMIT]) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        """Buffer metrics; :meth:`flush` sends them."""
        now = int(time.time() * 1000)
        self.pending.extend((run_id, k, float(v), now, step) for k, v in metrics.items())

    def flush(self) -> bool:
        """Send queued records and buffered metrics; return True when no metric is left.

        Offline, one retry-free probe decides whether to try; a failure keeps everything for the
        next flush (and the metrics in the checkpoint).
        """
        if self.offline and not self._reconnect():
            self.failures += 1
            return False
        if not self._replay():
            return False
        return self._send_metrics()

    def drop_logged(self, run_id: str, key: str) -> None:
        """Forget buffered metrics of ``run_id`` at steps already logged (after a resume).

        When the store cannot be asked now, the check runs before these metrics are sent.
        """
        try:
            last = self._last_step(run_id, key)
        except Exception as exc:
            self._failed(exc, None)
            self._dedupe[run_id] = key
            return
        self.pending = [m for m in self.pending if m[0] != run_id or m[4] > last]

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> bool:
        """Upload a file; queued (and listed in :attr:`unsent_artifacts`) if the store is away."""
        path = str(Path(path).resolve())
        ok = self._call("artifact", run_id, (path, artifact_path))
        if not ok and path not in self.unsent_artifacts:
            self.unsent_artifacts.append(path)
        return ok

    def end(self, run_id: str, status: str = "FINISHED") -> bool:
        """Terminate a run; ending a parent run first sends everything still queued."""
        if run_id in self._parents:
            self.flush()
        ok = self._call("end", run_id, status)
        if run_id in self._parents and (self._queue or self.pending):
            _warn(self.summary())
        return ok

    # -- reporting ---------------------------------------------------------------------------

    def unsent(self) -> dict[str, int]:
        """Counts of what has not reached the store: metric values, artifacts, other records."""
        counts = {"metric values": len(self.pending)}
        for op, *_ in self._queue:
            kind = {"artifact": "artifacts", "params": "param sets", "tags": "tag sets",
                    "create": "stage runs", "status": "status changes",
                    "end": "status changes"}[op]
            counts[kind] = counts.get(kind, 0) + 1
        counts["refused records"] = len(self.refused)
        return {k: v for k, v in counts.items() if v}

    def summary(self) -> str | None:
        """What was not logged, in one sentence (None when everything was)."""
        counts = self.unsent()
        if not counts:
            return None
        parts = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        text = (f"not logged to the MLflow tracking store at {self.uri}: {parts} "
                f"({self.failures} tracking calls failed)")
        if self.refused:
            text += f"; first refusal: {self.refused[0]}"
        return text

    def journal(self) -> dict:
        """The queued records, picklable, for a checkpoint (metrics are in :attr:`pending`)."""
        return {"queue": [list(item) for item in self._queue], "dedupe": dict(self._dedupe),
                "unsent_artifacts": list(self.unsent_artifacts)}

    def load_journal(self, journal: dict | None) -> None:
        """Queue the records of :meth:`journal` again (after a resume); the next flush sends them."""
        if not journal:
            return
        self._queue.extend([list(item) for item in journal.get("queue", [])])
        self._dedupe.update(journal.get("dedupe", {}))
        for path in journal.get("unsent_artifacts", []):
            if path not in self.unsent_artifacts:
                self.unsent_artifacts.append(path)

    # -- internals ---------------------------------------------------------------------------

    def _policy(self):
        return http_policy(RUN_RETRIES, RUN_TIMEOUT, RUN_BACKOFF, override=False)

    def _resolve(self, run_id: str) -> str:
        if not run_id.startswith(OFFLINE_PREFIX):
            return run_id
        if run_id not in self._resolved:
            self._resolved[run_id] = self._materialise(run_id)
        return self._resolved[run_id]

    def _materialise(self, placeholder: str) -> str:
        """Create the run a placeholder describes, or find the one created earlier."""
        name, tags = _decode_placeholder(placeholder)
        digest = _digest(placeholder)
        found = self.client.search_runs([self.experiment_id],
                                        f"tags.`ltcore.offline_id` = '{digest}'", max_results=1)
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = self.client.create_run(self.experiment_id, run_name=name,
                                            tags={**tags, "ltcore.offline_id": digest}).info.run_id
        self._resolved[placeholder] = run_id
        return run_id

    def _last_step(self, run_id: str, key: str) -> int:
        with self._policy():
            history = self.client.get_metric_history(self._resolve(run_id), key)
        return max((m.step for m in history), default=-1)

    def _do(self, op: str, run_id: str, payload) -> None:
        from mlflow.entities import Param, RunTag

        with self._policy():
            if op == "create":
                self._resolve(run_id)
                return
            real = self._resolve(run_id)
            if op == "params":
                items = [Param(k, v) for k, v in payload]
                for i in range(0, len(items), 100):
                    self.client.log_batch(real, params=items[i:i + 100])
            elif op == "tags":
                items = [RunTag(k, v) for k, v in payload]
                for i in range(0, len(items), 100):
                    self.client.log_batch(real, tags=items[i:i + 100])
            elif op == "status":
                self.client.update_run(real, status=payload)
            elif op == "end":
                self.client.set_terminated(real, status=payload)
            elif op == "artifact":
                path, artifact_path = payload
                self.client.log_artifact(real, path, artifact_path)
                if path in self.unsent_artifacts:
                    self.unsent_artifacts.remove(path)
            else:  # pragma: no cover - the ops are this class's own
                raise ValueError(f"unknown tracking operation {op!r}")

    def _call(self, op: str, run_id: str, payload) -> bool:
        """Do ``op`` now, or queue it when offline or when it fails transiently. Never raises."""
        item = [op, run_id, payload, 0]
        if self.offline:
            self.failures += 1
            self._queue.append(item)
            return False
        try:
            self._do(op, run_id, payload)
            return True
        except Exception as exc:
            if self._failed(exc, item):
                self._queue.append(item)
            return False

    def _failed(self, exc: BaseException, item: list | None) -> bool:
        """Count a failure; return True when ``item`` should be queued for a later attempt.

        A refusal (the store answered with an error) is recorded and not retried; otherwise one
        probe tells a store that went away (go offline) from one that answers (count the
        attempt; give up after :data:`MAX_ATTEMPTS`).
        """
        self.failures += 1
        if not refused(exc):
            if self.offline or not self._probe():
                if not self.offline:
                    self.offline = True
                    _warn(f"the MLflow tracking store at {self.uri} stopped answering "
                          f"({describe(exc, 160)}); training goes on: metric values are "
                          "buffered and saved with the checkpoint, other records are queued, "
                          "and everything is sent when it answers again")
                return True
            if item is None:
                return True
            item[3] += 1
            if item[3] < MAX_ATTEMPTS:
                return True
        what = f"{item[0]} of run {item[1][:40]}" if item else "a query"
        self.refused.append(f"{what}: {describe(exc)}")
        if item is not None and item[0] == "artifact" and item[2][0] not in self.unsent_artifacts:
            self.unsent_artifacts.append(item[2][0])
        return False

    def _probe(self) -> bool:
        """One retry-free request: does the store answer?"""
        try:
            with http_policy(retries=0, timeout=PROBE_TIMEOUT):
                self.client.get_experiment(self.experiment_id)
            return True
        except Exception:
            return False

    def _reconnect(self) -> bool:
        if not self._probe():
            return False
        self.offline = False
        _warn(f"the MLflow tracking store at {self.uri} answers again; sending "
              f"{len(self._queue)} queued records and {len(self.pending)} metric values")
        return True

    def _replay(self) -> bool:
        """Send queued records in order; stop (keeping the rest) at a transient failure."""
        while self._queue:
            item = self._queue[0]
            try:
                self._do(*item[:3])
            except Exception as exc:
                if self._failed(exc, item):
                    return False
            self._queue.pop(0)
        return True

    def _send_metrics(self) -> bool:
        from mlflow.entities import Metric

        while self.pending:
            run_id = self.pending[0][0]
            try:
                if run_id in self._dedupe:
                    last = self._last_step(run_id, self._dedupe[run_id])
                    del self._dedupe[run_id]
                    self.pending = [m for m in self.pending if m[0] != run_id or m[4] > last]
                    continue
                real = self._resolve(run_id)
                batch = [m for m in self.pending if m[0] == run_id][:MAX_BATCH]
                with self._policy():
                    self.client.log_batch(real, metrics=[Metric(k, v, ts, step)
                                                         for _, k, v, ts, step in batch])
            except Exception as exc:
                if refused(exc):
                    self.failures += 1
                    dropped = [m for m in self.pending if m[0] == run_id]
                    self.refused.append(f"{len(dropped)} metric values of run {run_id[:40]}: "
                                        f"{describe(exc)}")
                    self.pending = [m for m in self.pending if m[0] != run_id]
                    continue
                self._failed(exc, None)
                return False
            sent = set(map(id, batch))
            self.pending = [m for m in self.pending if id(m) not in sent]
        return True
