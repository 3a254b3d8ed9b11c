"""Stopped cogloat + proco runs resume to the same final numbers: the key encoder, the queue,
the coreset and a stopped epoch's progress are all in the checkpoint."""

import pytest
import torch

from ltcore import Plugins, RunStopped, hookimpl, resolve, resume, train
from ltcore.testing import FAST_SETTINGS, SignalAtStep

SETTINGS = [*FAST_SETTINGS, "views.backend=batched", "cogloat.classifier_epochs=0",
            "proco.reselect_every=0", "cogloat.queue_size=100"]


class KillAfterFirstEpoch:
    """Interrupts training once, at the start of the second epoch (after the first epoch's
    checkpoint is written), as a killed process would."""

    armed = False

    @hookimpl
    def setup_run(self, run):
        self.stage = run.main_stage

    @hookimpl
    def epoch_start(self, run, stage, epoch):
        if self.armed and stage is self.stage and epoch == 1:
            self.armed = False
            raise KeyboardInterrupt


def test_stopped_cogloat_proco_runs_resume_to_identical_metrics(isolated):
    """Killed at an epoch boundary, and stopped by SIGTERM at a step boundary inside the second
    epoch (the checkpoint then also holds the epoch's progress): both continue to the numbers
    of an uninterrupted run."""
    killer, stopper = KillAfterFirstEpoch(), SignalAtStep("train", 11)  # step 4 of 8, epoch 2
    plugins = Plugins(extra={"killer": killer, "signal": stopper})
    selected = ["cogloat", "proco"]
    settings = resolve(plugins, selected, assignments=SETTINGS, overrides={"epochs": 2})
    full = train(plugins, selected, settings, progress=False)
    assert "test/acc" in full.metrics and "test/variance" in full.metrics

    killer.armed = True
    with pytest.raises(KeyboardInterrupt):
        train(plugins, [*selected, "killer"], settings, progress=False)
    with pytest.raises(RunStopped):
        train(plugins, [*selected, "signal"], settings, progress=False)
    assert stopper.sent
    interrupted = sorted((p for p in (isolated / "runs").iterdir()
                          if (p / "run_id").read_text().strip() != full.run_id),
                         key=lambda p: (p / "config.toml").stat().st_mtime)
    assert len(interrupted) == 2
    progress = [torch.load(p / "checkpoint.pt", weights_only=True)["epoch_progress"]
                for p in interrupted]
    assert progress[0] is None and progress[1]["step"] == 4
    for folder in interrupted:
        assert resume(plugins, folder.name, progress=False).metrics == full.metrics
