"""The :class:`Tracker`: one ``ltrun`` call's MLflow records, tolerant of a store that goes away."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TrackingError
from .store import (GIT_COMMIT_TAG, PROBE_TIMEOUT, RUN_BACKOFF, RUN_RETRIES, RUN_TIMEOUT, _warn,
                    describe, experiment_id, extra_run_tags, http_policy, open_store, refused,
                    resolve_uri, retry_locked, source_tags, start_timeout, unreachable)

if TYPE_CHECKING:
    from ..run import Run

MAX_BATCH = 1000
PARAM_LIMIT = 6000
TAG_LIMIT = 5000

MAX_ATTEMPTS = 5
"""A queued record that fails this often while the store answers is given up as refused."""

OFFLINE_PREFIX = "offline-"


def _encode_placeholder(name: str, tags: dict[str, str]) -> str:
    payload = json.dumps({"name": name, "tags": tags}, sort_keys=True).encode()
    return OFFLINE_PREFIX + base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _decode_placeholder(run_id: str) -> tuple[str, dict[str, str]]:
    data = run_id[len(OFFLINE_PREFIX):]
    payload = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    return payload["name"], payload["tags"]


def _digest(run_id: str) -> str:
    return hashlib.sha1(run_id.encode()).hexdigest()[:20]


DATASET_CONTEXT_TAG = "mlflow.data.context"
"""The input tag MLflow uses for the role of a dataset in a run."""


def dataset_input(run: Run) -> dict[str, str]:
    """The run's training data as an MLflow dataset input (the fields of
    ``mlflow.entities.Dataset`` and its context): named after the dataset, with a digest of the
    training split's identity (name, imbalance factor, images per class, split sizes and the
    settings of a stratified split), the folder it was read from as a ``local`` source (else
    the dataset's loader as an ``ltcore`` source), and its classes and sizes as schema and
    profile."""
    data, cfg = run.dataset, run.config
    splits = {name: len(split) for name, split in (("train", data.train), ("val", data.val),
                                                   ("test", data.test)) if split is not None}
    profile = {"num_classes": data.num_classes, "train_images": len(data.train),
               "imbalance_factor": cfg.imbalance_factor, "splits": splits,
               "class_counts": data.class_counts.tolist()}
    identity = json.dumps({"name": data.name, "imbalance_factor": cfg.imbalance_factor,
                           "class_counts": profile["class_counts"], "splits": splits,
                           "split": [cfg.split_seed, cfg.val_fraction, cfg.test_fraction]},
                          sort_keys=True)
    folder = Path(data.source) if data.source else None
    if folder is not None and folder.exists():
        source_type, source = "local", {"uri": str(folder.resolve())}
    else:
        source_type, source = "ltcore", {"dataset": data.name, "loader": data.source}
    schema = {"image": [data.channels, data.image_size, data.image_size], "label": "class index",
              "classes": list(data.classes)}
    return {"name": data.name, "digest": hashlib.sha256(identity.encode()).hexdigest()[:16],
            "source_type": source_type, "source": json.dumps(source),
            "schema": json.dumps(schema), "profile": json.dumps(profile), "context": "train"}


class Tracker:
    """MLflow client for one ``ltrun`` call: the parent run and its stage runs.

    Only the constructor and the start of the parent run raise (:class:`TrackingError`); every
    later call is tolerant, see the module documentation.
    """

    def __init__(self, uri: str, experiment: str):
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
        self._logged: dict[str, set[tuple[str, int]]] = {}
        """Per run id, the (name, step) of every metric point the store holds: a point is
        sent once, whatever resumes, reconnections and retries happen."""
        self._unverified: set[str] = set()
        """Runs whose points in the store are read before the next send (reopened runs, and
        runs whose send failed: the store may have written some of it)."""
        self._parents: set[str] = set()
        self._tags = extra_run_tags()
        self._source_tags = {} if GIT_COMMIT_TAG in self._tags else dict(source_tags(os.getcwd()))
        """The git tags of parent runs (none when a commit is given by hand)."""
        with http_policy(retries=0, timeout=start_timeout()):
            try:
                self.client = open_store(self.uri)
                self.experiment_id = experiment_id(self.client, experiment)
            except Exception as exc:
                raise unreachable(self.uri, exc) from exc

    # -- the calls the engine makes --------------------------------------------------------

    def start(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        """Create a run; the parent run (no ``parent_id``) must succeed, a stage run created
        while the store is away gets a placeholder id and is created when it answers."""
        tags = {**self._tags, **{k: str(v) for k, v in tags.items()}}
        if parent_id is None:
            tags = {**self._source_tags, **tags}
            try:
                with self._policy():
                    run_id = retry_locked(self.client.create_run, self.experiment_id,
                                          run_name=name, tags=tags).info.run_id
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
                    return retry_locked(self.client.create_run, self.experiment_id,
                                        run_name=name, tags=tags).info.run_id
            except Exception as exc:
                self._failed(exc, None)
        placeholder = _encode_placeholder(name, tags)
        self._queue.append(["create", placeholder, None, 0])
        return placeholder

    def stage_run(self, parent_id: str, stage: str) -> str | None:
        """The stage run ``stage`` of ``parent_id`` a stopped process created after its last
        checkpoint (so that a resumed run reuses it), or None (also when the store is away)."""
        try:
            with self._policy():
                found = retry_locked(self.client.search_runs, [self.experiment_id],
                                     f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                                     f"tags.`ltcore.stage` = '{stage}'", max_results=1)
        except Exception as exc:
            self._failed(exc, None)
            return None
        return found[0].info.run_id if found else None

    def reopen(self, run_id: str) -> None:
        """Mark a resumed run RUNNING again (the first run a tracker reopens, before creating
        any, is its parent run)."""
        if not self._parents and not run_id.startswith(OFFLINE_PREFIX):
            self._parents.add(run_id)
        self._unverified.add(run_id)
        self._call("status", run_id, "RUNNING")

    def log_params(self, run_id: str, params: dict[str, Any]) -> bool:
        """Log params (values cut at 6000 characters), 100 per request."""
        return self._call("params", run_id, [(k, str(v)[:PARAM_LIMIT]) for k, v in params.items()])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> bool:
        """Set tags (values cut at 5000 characters)."""
        return self._call("tags", run_id, [(k, str(v)[:TAG_LIMIT]) for k, v in tags.items()])

    def log_input(self, run_id: str, dataset: dict[str, str]) -> bool:
        """Record a dataset input (a :func:`dataset_input` record), as ``mlflow.log_input``
        does; queued like params when the store is away."""
        return self._call("input", run_id, dict(dataset))

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

    def verify(self, run_id: str) -> None:
        """Read which points of ``run_id`` the store holds before sending it more (a run that
        an earlier process recorded into: the points it sent are not sent again)."""
        self._unverified.add(run_id)

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> bool:
        """Upload a file; queued (and listed in :attr:`unsent_artifacts`) if the store is away."""
        path = str(Path(path).resolve())
        ok = self._call("artifact", run_id, (path, artifact_path))
        if not ok and path not in self.unsent_artifacts:
            self.unsent_artifacts.append(path)
        return ok

    def log_model(self, run_id: str, folder: str, name: str, registered_name: str = "") -> bool:
        """Log the MLflow Model saved in ``folder`` as the model ``name`` of ``run_id`` (an
        MLflow logged model, ``runs:/<run id>/<name>``) and register it as
        ``registered_name`` when given; queued like artifacts when the store is away."""
        return self._call("model", run_id, (str(Path(folder).resolve()), name, registered_name))

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
            kind = {"artifact": "artifacts", "model": "models", "params": "param sets",
                    "tags": "tag sets",
                    "input": "dataset inputs", "create": "stage runs", "status": "status changes",
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
        return {"queue": [list(item) for item in self._queue],
                "unverified": sorted(self._unverified | set(self._logged)),
                "unsent_artifacts": list(self.unsent_artifacts)}

    def load_journal(self, journal: dict | None) -> None:
        """Queue the records of :meth:`journal` again (after a resume); the next flush sends
        them."""
        if not journal:
            return
        self._queue.extend([list(item) for item in journal.get("queue", [])])
        self._unverified.update(journal.get("unverified", journal.get("dedupe", ())))
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
        if found:  # an earlier attempt created it, and may have sent points
            run_id = found[0].info.run_id
            self._unverified.add(placeholder)
        else:
            run_id = self.client.create_run(self.experiment_id, run_name=name,
                                            tags={**tags, "ltcore.offline_id": digest}).info.run_id
        self._resolved[placeholder] = run_id
        return run_id

    def _stored_points(self, run_id: str) -> set[tuple[str, int]]:
        """The (name, step) of every metric point the store holds for ``run_id``."""
        real = self._resolve(run_id)
        points = set()
        with self._policy():
            for key in retry_locked(self.client.get_run, real).data.metrics:
                history = retry_locked(self.client.get_metric_history, real, key)
                points.update((m.key, m.step) for m in history)
        return points

    def _do(self, op: str, run_id: str, payload) -> None:
        retry_locked(self._do_once, op, run_id, payload)

    def _do_once(self, op: str, run_id: str, payload) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag, Param, RunTag

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
            elif op == "input":
                fields = {k: v for k, v in payload.items() if k != "context"}
                context = [InputTag(DATASET_CONTEXT_TAG, payload["context"])]
                self.client.log_inputs(real, datasets=[DatasetInput(Dataset(**fields), context)])
            elif op == "status":
                self.client.update_run(real, status=payload)
            elif op == "end":
                self.client.set_terminated(real, status=payload)
            elif op == "artifact":
                path, artifact_path = payload
                self.client.log_artifact(real, path, artifact_path)
                if path in self.unsent_artifacts:
                    self.unsent_artifacts.remove(path)
            elif op == "model":
                self._log_model(real, *payload)
            else:  # pragma: no cover - the ops are this class's own
                raise ValueError(f"unknown tracking operation {op!r}")

    def _log_model(self, run_id: str, folder: str, name: str, registered_name: str) -> None:
        """Create the logged model ``name`` of ``run_id`` (or find the one an attempt that
        stopped half-way created), write its id into the MLmodel file, upload ``folder``, mark
        it ready and register it."""
        from mlflow.entities import LoggedModelOutput
        from mlflow.exceptions import MlflowException
        from mlflow.models import Model

        found = self.client.search_logged_models(
            [self.experiment_id], f"name = '{name}' AND source_run_id = '{run_id}'")
        model = found[0] if found else self.client.create_logged_model(
            self.experiment_id, name=name, source_run_id=run_id)
        if not found:
            self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        description = Model.load(folder)
        description.run_id = run_id
        description.model_id = description.model_uuid = model.model_id
        description.artifact_path = model.artifact_location
        description.save(str(Path(folder) / "MLmodel"))
        self.client.log_model_artifacts(model.model_id, folder)
        self.client.finalize_logged_model(model.model_id, "READY")
        if registered_name:
            try:
                self.client.create_registered_model(registered_name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            # the files' location, not models:/<id>: MLflow would look that up in the store
            # of its global tracking URI
            self.client.create_model_version(registered_name, model.artifact_location,
                                             run_id=run_id, model_id=model.model_id)

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
                if run_id in self._unverified:
                    self._logged[run_id] = self._stored_points(run_id)
                    self._unverified.discard(run_id)
                logged = self._logged.setdefault(run_id, set())
                batch, keys = [], set()
                for point in self.pending:  # the first value of a (name, step) counts
                    key = (point[1], point[4])
                    if point[0] == run_id and key not in logged and key not in keys:
                        batch.append(point)
                        keys.add(key)
                batch = batch[:MAX_BATCH]
                if batch:
                    real = self._resolve(run_id)
                    with self._policy():
                        retry_locked(self.client.log_batch, real, metrics=[
                            Metric(k, v, ts, step) for _, k, v, ts, step in batch])
            except Exception as exc:
                if refused(exc):
                    self.failures += 1
                    dropped = [m for m in self.pending if m[0] == run_id]
                    self.refused.append(f"{len(dropped)} metric values of run {run_id[:40]}: "
                                        f"{describe(exc)}")
                    self.pending = [m for m in self.pending if m[0] != run_id]
                    continue
                self._unverified.add(run_id)  # the store may have written part of it
                self._failed(exc, None)
                return False
            logged.update((k, step) for _, k, _, _, step in batch)
            self.pending = [m for m in self.pending if m[0] != run_id or (m[1], m[4]) not in logged]
        return True


class SilentTracker:
    """The tracker of the ranks other than 0 in a distributed run: it records nothing (rank 0
    records the run) and offers :class:`Tracker`'s calls."""

    def __init__(self, uri: str = "", experiment: str = ""):
        self.uri = uri
        self.experiment = experiment
        self.pending: list = []

    def start(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        return f"{OFFLINE_PREFIX}rank-{name}"

    def stage_run(self, parent_id: str, stage: str) -> None:
        return None

    def log_params(self, run_id: str, params: dict[str, Any]) -> bool:
        return True

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> bool:
        return True

    def log_input(self, run_id: str, dataset: dict[str, str]) -> bool:
        return True

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> bool:
        return True

    def log_model(self, run_id: str, folder: str, name: str, registered_name: str = "") -> bool:
        return True

    def flush(self) -> bool:
        return True

    def reopen(self, run_id: str) -> None:
        pass

    def end(self, run_id: str, status: str = "FINISHED") -> bool:
        return True

    def verify(self, run_id: str) -> None:
        pass

    def summary(self) -> None:
        return None

    def journal(self) -> dict:
        return {}

    def load_journal(self, journal: dict | None) -> None:
        pass
