"""Start-up: the phase marks ``benchmarks/startup.py`` reads, and the work a run does once."""

from ltcore.startup import TRACE_ENV, mark
from ltcore.testing import FAST


def test_marks_are_written_only_with_the_variable(tmp_path, monkeypatch):
    trace = tmp_path / "trace.txt"
    monkeypatch.delenv(TRACE_ENV, raising=False)
    mark("test phase without the variable")
    assert not trace.exists()
    monkeypatch.setenv(TRACE_ENV, str(trace))
    mark("test phase")
    mark("test phase")  # each phase once: the first time it is reached
    mark("another test phase")
    lines = [line.rpartition(" ") for line in trace.read_text().splitlines()]
    assert [phase for phase, _, _ in lines] == ["test phase", "another test phase"]
    assert float(lines[0][2]) <= float(lines[1][2])


def test_a_run_opens_the_tracking_store_once(ltrun, monkeypatch):
    """One MLflow client, hence one store, for the whole run (the start check included)."""
    import mlflow.tracking

    opened = []

    class CountedClient(mlflow.tracking.MlflowClient):
        def __init__(self, *args, **kwargs):
            opened.append(kwargs.get("tracking_uri", args[0] if args else None))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", CountedClient)
    result = ltrun("--epochs", "1", *FAST)
    assert result.exit_code == 0, result.stderr
    assert len(opened) == 1, opened
