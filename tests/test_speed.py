"""The fast path's switches (speed.*, optim.fused): off on the CPU by default, and each one,
when turned on here, trains what the plain path trains.

Tolerances: channels-last convolutions, the fused SGD kernel and inductor's generated code
change the order of float32 summations, not what is summed. Over three SGD steps of SupCon on
ResNet-8 (measured on an AVX-512 Xeon) the losses differ by under 1e-6 relative, the parameters
by under 1e-5 and the validation logits (about 2 in size) by under 1e-6; BCL's step gave the
same for losses and parameters and 1e-4 for its logits. The tests allow 1e-4
relative for losses, 1e-4 absolute for parameters and 1e-3 for logits: room for other CPUs'
summation orders, and still far below what a wrong kernel changes (a dropped term or a
transposed layout moves losses and logits in their first digits).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from ltcore.config import SpeedConfig
from ltcore.engine import checkpoints
from ltcore.errors import StorageError
from ltcore.speed import Speed
from ltcore.testing import recorded_runs, run_folder
from ltcore.testing.distributed import train_steps

FAST = ["--epochs", "2", "--batch-size", "32", "--set", "model.backbone=resnet8",
        "--set", "views.workers=0"]


def assert_same_training(plain: dict, fast: dict) -> None:
    assert fast["terms"] == plain["terms"]
    for got, want in zip(fast["losses"], plain["losses"]):
        assert got == pytest.approx(want, rel=1e-4)
    for key, value in plain["state"].items():
        torch.testing.assert_close(fast["state"][key].float(), value.float(), rtol=0, atol=1e-4)
    torch.testing.assert_close(fast["val"].logits, plain["val"].logits, rtol=1e-3, atol=1e-3)


def test_auto_switches_are_off_on_the_cpu_and_on_with_cuda():
    cpu = Speed.resolve(SpeedConfig(), torch.device("cpu"))
    assert cpu == Speed()
    assert cpu.describe() == "none"
    cuda = Speed.resolve(SpeedConfig(), torch.device("cuda"))
    assert (cuda.channels_last, cuda.tf32, cuda.cudnn_benchmark, cuda.compile,
            cuda.background_checkpoints) == (True, True, True, True, True)
    assert not cuda.compile_strict  # auto falls back to eager where compilation fails
    assert Speed.resolve(SpeedConfig(compile="on"), torch.device("cpu")).compile_strict
    assert Speed.resolve(SpeedConfig(compile="off"), torch.device("cuda")).compile is False


def test_a_default_cpu_run_uses_the_plain_path(make_run):
    from ltcore.engine.schedule import build_optimizer, parameter_groups

    run = make_run(["supcon"])
    assert run.speed == Speed()
    stage = run.main_stage
    optimizer = build_optimizer(run, stage, parameter_groups(run, stage))
    assert not optimizer.defaults["fused"]
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()  # not channels-last


def test_switches_that_need_cuda_are_refused_on_the_cpu(ltrun):
    result = ltrun("--set", "speed.tf32=on", "--epochs", "1")
    assert result.exit_code == 2
    assert "speed.tf32 = 'on' needs a CUDA device" in result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_channels_last_and_the_fused_optimiser_train_as_the_plain_path(isolated, make_run):
    plain = train_steps(["supcon"], [], steps=3)
    fast = train_steps(["supcon"], ["speed.channels_last=on", "optim.fused=on"], steps=3)
    assert_same_training(plain, fast)
    run = make_run(["supcon"], "speed.channels_last=on", "optim.fused=on")
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert run.speed.layout(torch.zeros(2, 3, 8, 8)).is_contiguous(
        memory_format=torch.channels_last)


@pytest.mark.slow
def test_the_compiled_backbone_trains_as_the_eager_one(isolated, make_run):
    """torch.compile with inductor on the CPU (the code generator a GPU run uses, in C++).
    About 30 s of C++ compilation on two cores, so a developer's test (-m slow); the GPU checks
    (benchmarks/gpu_checks.sh) train compiled backbones on the device."""
    plain = train_steps(["supcon"], [], steps=3)
    compiled = train_steps(["supcon"], ["speed.compile=on"], steps=3)
    assert_same_training(plain, compiled)
    run = make_run(["supcon"], "speed.compile=on")
    assert run.model.backbone._compiled_call_impl is not None
    assert all("_orig_mod" not in key for key in run.model.state_dict())  # keys as saved


def test_background_checkpoints_record_what_the_plain_run_records(ltrun):
    plain = ltrun(*FAST)
    background = ltrun(*FAST, "--set", "speed.background_checkpoints=on")
    assert plain.exit_code == 0 and background.exit_code == 0, background.stderr
    runs = sorted(recorded_runs(nested=False), key=lambda r: r.info.start_time)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    figures = [{k: v for k, v in r.data.metrics.items() if "time" not in k and "per_s" not in k}
               for r in runs]
    assert figures[0] == figures[1]
    saved = [checkpoints.read(run_folder("runs", r.info.run_id) / checkpoints.CHECKPOINT)
             for r in runs]
    assert saved[0]["position"] == saved[1]["position"] == (1, 0)
    for key, value in saved[0]["modules"].items():
        assert torch.equal(saved[1]["modules"][key], value)


def test_the_background_writer_writes_in_order_and_raises_a_failed_write(tmp_path):
    writer = checkpoints.BackgroundWriter()
    path = tmp_path / "checkpoint.pt"
    state = {"epoch": torch.tensor(1)}
    assert writer.submit(path, state, "after epoch 1") is None
    state["epoch"] += 1  # changed after submitting: the file keeps what was submitted
    assert writer.wait() == "after epoch 1"
    assert int(torch.load(path, weights_only=True)["epoch"]) == 1
    writer.submit(path, {"epoch": torch.tensor(2)}, "after epoch 2")
    assert writer.submit(path, {"epoch": torch.tensor(3)}, "after epoch 3") == "after epoch 2"
    assert writer.wait() == "after epoch 3"
    assert int(torch.load(path, weights_only=True)["epoch"]) == 3
    assert not any(t.name == "ltcore-checkpoint-writer" for t in threading.enumerate())

    full = tmp_path / "full" / "checkpoint.pt"
    full.parent.mkdir()
    (full.parent / ".checkpoint.pt.tmp").symlink_to("/dev/full")
    writer.submit(full, state, "after epoch 4")
    with pytest.raises(StorageError, match="could not write"):
        writer.wait()
    assert writer.wait() is None  # the error is raised once
    assert not full.exists() and Path(path).exists()
