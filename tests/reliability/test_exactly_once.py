"""One process trains a run at a time, and every metric point is recorded once: a second
``ltrun --resume`` of a run being trained is refused, naming the process that trains it; a
finished run resumed records nothing again; a damaged latest checkpoint offers the previous one
(a run keeps its last two) or a restart, and either ends with the numbers of an uninterrupted
run, each point once."""

import os
import signal
import time

import pytest
import torch

from ltcore.engine import checkpoints
from ltcore.testing import FAST, repeated_points, run_folder

RECIPE = ["--plugin", "ce", "--epochs", "3", *FAST]
LONG = ["--plugin", "kcl", "--epochs", "30", *FAST]


def busy_line(process, run_id: str, pid: int) -> None:
    assert process.code == 2, process.err
    (line,) = process.err.strip().splitlines()
    assert line.startswith(f"Error: run {run_id} is being trained by process {pid} on "), line
    assert f"stop it (kill -TERM {pid} on " in line


def test_a_second_process_cannot_train_a_run_one_trains(ltrun_process):
    first = ltrun_process.start(*LONG)
    run_id = first.run_id()
    busy_line(ltrun_process("--resume", run_id, "--no-progress"), run_id, first.proc.pid)
    first.signal(signal.SIGTERM)
    assert first.wait() == 143, first.err

    # two resumes of the stopped run at once: one trains it, the other is refused
    both = [ltrun_process.start("--resume", run_id, "--no-progress") for _ in range(2)]
    while all(p.proc.poll() is None for p in both):
        time.sleep(0.05)
    refused = next(p for p in both if p.proc.poll() is not None)
    trainer = next(p for p in both if p is not refused)
    refused.wait()
    busy_line(refused, run_id, trainer.proc.pid)
    assert trainer.run_id() == run_id  # it resumed: stop it at its next step
    trainer.signal(signal.SIGTERM)
    assert trainer.wait() == 143, trainer.err
    assert ltrun_process.client().get_run(run_id).info.status == "KILLED"
    assert repeated_points(ltrun_process.client(), run_id) == {}


def test_a_damaged_checkpoint_offers_the_previous_one_and_every_point_is_recorded_once(
        ltrun_process):
    reference = ltrun_process(*RECIPE)
    assert reference.code == 0, reference.err
    process = ltrun_process.start(*RECIPE)
    run_id = process.run_id()
    folder = run_folder(ltrun_process.folder / "runs", run_id)
    while "train 2/3" not in process.out and process.proc.poll() is None:
        time.sleep(0.05)
    process.proc.send_signal(signal.SIGKILL)  # after epoch 2's points were sent
    process.wait()
    previous = torch.load(folder / checkpoints.PREVIOUS, weights_only=True)
    latest = folder / checkpoints.CHECKPOINT
    # the latest is after epoch 2, or after epoch 1 when the kill came while it was written
    assert previous["position"] <= torch.load(latest, weights_only=True)["position"]
    data = latest.read_bytes()
    cut = latest.with_suffix(".cut")  # a new file: a kill between the rotation's link and its
    cut.write_bytes(data[:len(data) // 2])  # rename leaves both names on one file
    os.replace(cut, latest)  # cut short

    refused = ltrun_process("--resume", run_id, "--no-progress")
    assert refused.code == 2, refused.err
    (line,) = refused.err.strip().splitlines()
    assert line.startswith(f"Error: {str(latest.relative_to(ltrun_process.folder))!r} is "
                           "truncated"), line
    assert (f"continue from the previous checkpoint, saved {previous['saved']}: ltrun --resume "
            f"{run_id} --from previous; or start the run over (in its MLflow run): ltrun "
            f"--resume {run_id} --from start") in line

    resumed = ltrun_process("--resume", run_id, "--from", "previous", "--no-progress")
    assert resumed.code == 0, resumed.err
    assert (folder / "checkpoint-damaged.pt").read_bytes() == data[:len(data) // 2]
    client = ltrun_process.client()
    assert ltrun_process.numbers(run_id) == ltrun_process.numbers(reference.run_id())
    assert repeated_points(client, run_id) == {}

    again = ltrun_process("--resume", run_id, "--no-progress")  # a finished run: nothing again
    assert again.code == 0 and f"run {run_id} finished earlier" in again.out, again.err
    assert repeated_points(client, run_id) == {}


@pytest.mark.slow
def test_a_run_started_over_records_each_point_once(ltrun_process):
    reference = ltrun_process(*RECIPE)
    run_id = reference.run_id()
    folder = run_folder(ltrun_process.folder / "runs", run_id)
    expected = ltrun_process.numbers(run_id)
    over = ltrun_process("--resume", run_id, "--from", "start", "--no-progress")
    assert over.code == 0, over.err
    assert "started over" in over.out
    assert ltrun_process.numbers(run_id) == expected
    client = ltrun_process.client()
    assert repeated_points(client, run_id) == {}
    assert client.get_run(run_id).info.status == "FINISHED"
    assert not os.path.exists(folder / ".checkpoint.pt.tmp")
