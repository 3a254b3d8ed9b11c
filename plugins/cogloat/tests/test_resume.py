"""A killed cogloat + proco run resumes to the same final numbers: the key encoder, the queue and
the coreset are all in the checkpoint."""

import pytest

from ltcore import Plugins, hookimpl, resolve, resume, train
from ltcore.testing import FAST_SETTINGS

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


def test_killed_cogloat_proco_run_resumes_to_identical_metrics(isolated):
    killer = KillAfterFirstEpoch()
    plugins = Plugins(extra={"killer": killer})
    selected = ["cogloat", "proco", "killer"]
    settings = resolve(plugins, selected, assignments=SETTINGS, overrides={"epochs": 2})
    full = train(plugins, selected, settings, progress=False)
    killer.armed = True
    with pytest.raises(KeyboardInterrupt):
        train(plugins, selected, settings, progress=False)
    run_id = next(p.name for p in (isolated / "runs").iterdir() if p.name != full.run_id)
    resumed = resume(plugins, run_id, progress=False)
    assert resumed.metrics == full.metrics
    assert "test/acc" in resumed.metrics and "test/variance" in resumed.metrics
