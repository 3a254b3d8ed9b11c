"""Untrusted files: a ``.pt`` whose pickle would run code is refused by every loader, with one
line naming it, and nothing in it runs (that ltcore's own files load this way is checked by
``test_kills.py``, on the files of a killed and resumed run)."""

from pathlib import Path

import torch


class RunsCode:
    """Pickles as a call to ``exec``: loading the file would write the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"settings": {}, "plugins": ["ce"], "modules": {}, "position": (0, 0),
                "payload": RunsCode(marker)}, path)
    return path


def assert_refused(process, path: Path, marker: Path):
    assert process.code == 2, process.err
    errors = [line for line in process.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(path.name) in errors[0] and "refused" in errors[0], process.err
    assert "nothing in it was run" in errors[0]
    assert "Traceback" not in process.err
    assert not marker.exists()


def test_evaluate_refuses_a_checkpoint_that_runs_code(ltrun_process, tmp_path):
    marker = tmp_path / "ran"
    path = evil_checkpoint(tmp_path / "evil.pt", marker)
    assert_refused(ltrun_process("evaluate", "--checkpoint", str(path)), path, marker)


def test_resume_refuses_a_checkpoint_that_runs_code(ltrun_process, tmp_path):
    marker = tmp_path / "ran"
    folder = ltrun_process.folder / "runs" / "0123456789abcdef0123456789abcdef"
    folder.mkdir(parents=True)
    path = evil_checkpoint(folder / "checkpoint.pt", marker)
    assert_refused(ltrun_process("--resume", folder.name), path, marker)

