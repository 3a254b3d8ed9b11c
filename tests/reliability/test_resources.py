"""Resources that run out: a full disk while checkpointing gives one clear line and keeps the
previous checkpoint, and once space is freed the run resumes to its end, each metric point
recorded once; the device running out of memory names the batch size to lower."""

import subprocess
import time

import pytest
import torch

from ltcore import hookimpl
from ltcore.testing import FAST, repeated_points

LONG = ["--plugin", "ce", "--epochs", "20", *FAST]
SHORTER = ["--plugin", "ce", "--epochs", "6", *FAST]
"""Long enough that the checkpoint after epoch 2 is not the last."""


def wait_for_epoch(folder, epoch, process):
    """Until the run's checkpoint is the one written after ``epoch`` epochs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for path in folder.glob("runs/*/checkpoint.pt"):
            try:
                if torch.load(path, weights_only=True)["position"][1] >= epoch:
                    return path
            except Exception:  # being replaced
                continue
        assert process.proc.poll() is None, process.err
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint after epoch {epoch}")


def assert_one_clear_line_and_previous_checkpoint(process, checkpoint, position, run_id):
    assert process.wait() == 2, process.err
    errors = [line for line in process.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0], process.err
    assert "is kept" in errors[0] and f"ltrun --resume {run_id}" in errors[0]
    assert "Traceback" not in process.err
    assert torch.load(checkpoint, weights_only=True)["position"] == position
    assert not list(checkpoint.parent.glob(".*.tmp"))


def test_a_full_device_keeps_the_previous_checkpoint(ltrun_process):
    """/dev/full as the file a checkpoint is written to: the kernel's own 'no space left'."""
    process = ltrun_process.start(*SHORTER)
    run_id = process.run_id()
    checkpoint = wait_for_epoch(ltrun_process.folder, 1, process)
    position = torch.load(checkpoint, weights_only=True)["position"]
    # the next checkpoint: written after the next epoch (the run is far from its end)
    (checkpoint.parent / ".checkpoint.pt.tmp").symlink_to("/dev/full")
    position_now = torch.load(checkpoint, weights_only=True)["position"]
    assert_one_clear_line_and_previous_checkpoint(process, checkpoint, position_now, run_id)
    assert position_now[1] >= position[1]
    parent = ltrun_process.client().get_run(run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["ltcore.error"].startswith("StorageError: could not write")
    (checkpoint.parent / ".checkpoint.pt.tmp").unlink(missing_ok=True)  # space freed
    resumed_and_recorded_once(ltrun_process, run_id)


def resumed_and_recorded_once(ltrun, run_id, epochs=6):
    """The run resumed to its end: every epoch's figures, each point once."""
    resumed = ltrun("--resume", run_id, "--no-progress")
    assert resumed.code == 0, resumed.err
    client = ltrun.client()
    assert client.get_run(run_id).info.status == "FINISHED"
    assert repeated_points(client, run_id) == {}
    (stage,) = client.search_runs([client.get_run(run_id).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert sorted(m.step for m in client.get_metric_history(stage.info.run_id,
                                                            "train/loss")) == list(range(epochs))


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs (needs the right to mount; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_disk_that_fills_up_while_training_gives_one_line(small_disk, ltrun_in):
    """Run folder and MLflow store on a small disk; the disk fills up during training."""
    ltrun = ltrun_in(small_disk, logs=small_disk.parent)
    process = ltrun.start(*LONG)
    run_id = process.run_id()
    checkpoint = wait_for_epoch(small_disk, 1, process)
    with open(small_disk / "filler", "wb") as fh:  # take every free byte
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError:
            pass
    position = torch.load(checkpoint, weights_only=True)["position"]
    assert_one_clear_line_and_previous_checkpoint(process, checkpoint, position, run_id)
    (small_disk / "filler").unlink()  # space freed
    resumed_and_recorded_once(ltrun, run_id, epochs=20)


class OutOfMemoryAtFirstStep:
    @hookimpl
    def adjust_images(self, step):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_running_out_of_device_memory_names_the_batch_size(isolated):
    from ltcore.config import resolve
    from ltcore.engine.runs import train
    from ltcore.errors import DeviceMemoryError
    from ltcore.plugins import Plugins
    from ltcore.testing import FAST_SETTINGS, recorded_runs

    plugins = Plugins(extra={"oom": OutOfMemoryAtFirstStep()})
    settings = resolve(plugins, ["ce", "oom"], assignments=FAST_SETTINGS, overrides={"epochs": 1})
    with pytest.raises(DeviceMemoryError) as info:
        train(plugins, ["ce", "oom"], settings, progress=False)
    message = str(info.value)
    assert "ran out of memory" in message and "batch size 64" in message
    assert "--batch-size (e.g. 32" in message
    (parent,) = recorded_runs(nested=False)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["ltcore.error"].startswith("DeviceMemoryError: ")
