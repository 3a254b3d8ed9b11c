"""Recording runs in MLflow.

One parent run per ``ltrun`` call and one nested run per stage. Metrics are buffered and sent with
``log_batch`` once per epoch; what could not be sent (a tracking server that went away) stays in
the buffer, is saved with the checkpoint and is sent when the run is resumed.
"""

from __future__ import annotations

import os
import time
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from .errors import TrackingError  # noqa: E402

DEFAULT_URI = "sqlite:///mlflow.db"
MAX_BATCH = 1000
PARAM_LIMIT = 6000


def default_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


class Tracker:
    """MLflow client for one ``ltrun`` call: the parent run and its stage runs."""

    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri or default_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        self.pending: list[tuple[str, str, float, int, int]] = []
        self.unsent_artifacts: list[str] = []
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (found.experiment_id if found is not None
                                  else self.client.create_experiment(experiment))
        except Exception as exc:
            raise TrackingError(f"cannot reach the MLflow tracking store at {self.uri!r}: "
                                f"{type(exc).__name__}: {exc}. Start the server, or point "
                                "--tracking-uri / MLFLOW_TRACKING_URI elsewhere") from exc

    def start(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        tags = dict(tags)
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:PARAM_LIMIT]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        """Buffer metrics; :meth:`flush` sends them."""
        now = int(time.time() * 1000)
        self.pending.extend((run_id, k, float(v), now, step) for k, v in metrics.items())

    def flush(self) -> bool:
        """Send buffered metrics in batches; keep them buffered and return False on failure."""
        from mlflow.entities import Metric

        try:
            while self.pending:
                run_id = self.pending[0][0]
                batch = [m for m in self.pending if m[0] == run_id][:MAX_BATCH]
                self.client.log_batch(run_id, metrics=[Metric(k, v, ts, step)
                                                       for _, k, v, ts, step in batch])
                sent = set(map(id, batch))
                self.pending = [m for m in self.pending if id(m) not in sent]
        except Exception:
            return False
        return True

    def last_step(self, run_id: str, key: str) -> int:
        """The last step logged for metric ``key`` (-1 if none)."""
        history = self.client.get_metric_history(run_id, key)
        return max((m.step for m in history), default=-1)

    def drop_logged(self, run_id: str, key: str) -> None:
        """Forget buffered metrics of ``run_id`` at steps already logged (after a resume)."""
        last = self.last_step(run_id, key)
        self.pending = [m for m in self.pending if m[0] != run_id or m[4] > last]

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> bool:
        try:
            self.client.log_artifact(run_id, path, artifact_path)
        except Exception:
            self.unsent_artifacts.append(path)
            return False
        return True

    def end(self, run_id: str, status: str = "FINISHED") -> bool:
        try:
            self.client.set_terminated(run_id, status=status)
        except Exception:
            return False
        return True
