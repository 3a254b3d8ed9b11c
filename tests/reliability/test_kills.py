"""Kills at random moments, while files are written too: resuming always ends with exactly the
numbers of an uninterrupted run, and no file is left half-written.

In the full test (``-m slow``) one run is stopped five times, each time resumed in a new process:
SIGKILL while its first checkpoint is written, SIGKILL while a later checkpoint is written,
SIGTERM and SIGKILL at random moments, SIGKILL while the final model is written. The short one
(also ``-m slow``) stops a run twice: SIGKILL while a checkpoint is written, SIGTERM at a random
moment. By default, tests/reliability/test_exactly_once.py kills a run and resumes it to the
numbers of an uninterrupted one. The random moments come from a seeded generator, so a failure can be replayed.
"""

import random
import signal
import time

import pytest
import torch

from ltcore.testing import FAST, run_folder

RECIPE = ["--plugin", "kcl", "--plugin", "lws", "--epochs", "2", "--set", "lws.epochs=1", *FAST]


def finish(ltrun_process, run_id, reference, evaluate=False):
    """The last resume runs to the end; the run has exactly the reference's numbers; its files
    load with tensors and plain values only, and (``evaluate``) ``ltrun evaluate`` reads its
    model."""
    folder = run_folder(ltrun_process.folder / "runs", run_id)
    final = ltrun_process.start("--resume", run_id, "--no-progress")
    assert final.wait() == 0, final.err
    assert f"run {run_id} finished" in final.out
    assert not list(folder.rglob(".*.tmp"))  # nothing half-written is left
    assert ltrun_process.numbers(run_id) == ltrun_process.numbers(reference.run_id())
    assert ltrun_process.client().get_run(run_id).info.status == "FINISHED"
    for name in ("checkpoint.pt", "model.pt"):
        saved = torch.load(folder / name, weights_only=True)
        assert {"settings", "plugins", "modules", "plugin_objects"} <= set(saved)
    if evaluate:
        evaluated = ltrun_process("evaluate", "--checkpoint", str(folder / "model.pt"), "--json")
        assert evaluated.code == 0, evaluated.err


@pytest.mark.slow
def test_a_kill_while_saving_and_a_signal_then_resumes_end_as_an_uninterrupted_run(ltrun_process):
    moments = random.Random(1)
    reference = ltrun_process(*RECIPE)
    assert reference.code == 0, reference.err
    first = ltrun_process.start(*RECIPE)
    run_id = first.run_id()
    folder = run_folder(ltrun_process.folder / "runs", run_id)
    assert first.kill_when(folder / ".checkpoint.pt.tmp")  # the checkpoint after an epoch
    first.wait()
    second = ltrun_process.start("--resume", run_id, "--no-progress")
    second.run_id()
    time.sleep(moments.uniform(0.5, 3.0))
    second.signal(signal.SIGTERM)
    assert second.wait() in (0, 143), second.err
    finish(ltrun_process, run_id, reference)


@pytest.mark.slow
def test_resumes_after_kills_end_with_the_numbers_of_an_uninterrupted_run(ltrun_process):
    moments = random.Random(20261201)
    reference = ltrun_process(*RECIPE)
    assert reference.code == 0, reference.err

    first = ltrun_process.start(*RECIPE)  # killed while writing its first checkpoint
    runs = ltrun_process.folder / "runs"
    while not runs.is_dir() or not [p for p in runs.iterdir() if not p.name.endswith(reference.run_id()[:8])]:
        time.sleep(0.01)
    (folder,) = [p for p in runs.iterdir() if not p.name.endswith(reference.run_id()[:8])]
    assert first.kill_when(folder / ".checkpoint.pt.tmp")
    first.wait()
    run_id = (folder / "run_id").read_text().strip()  # written before the first checkpoint

    def resume():
        return ltrun_process.start("--resume", run_id, "--no-progress")

    second = resume()  # starts over from config.toml; killed while writing a checkpoint
    second.run_id()
    assert second.kill_when(folder / ".checkpoint.pt.tmp")
    second.wait()
    for sig in (signal.SIGTERM, signal.SIGKILL):  # at random moments of training
        process = resume()
        process.run_id()
        time.sleep(moments.uniform(0.5, 4.0))
        process.signal(sig)
        assert process.wait() in (0, 128 + sig, -sig), process.err
    last = resume()  # killed while writing the final model (or it finished before)
    last.run_id()
    last.kill_when(folder / ".model.pt.tmp", limit_s=120)
    last.wait()
    assert not (folder / "model.pt").exists() or torch.load(folder / "model.pt",
                                                            weights_only=True)["modules"]
    finish(ltrun_process, run_id, reference, evaluate=True)
