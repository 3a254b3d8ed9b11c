"""Resuming a killed student stage gives the same final numbers and the same queue."""

import pytest
import torch
from ltcore_gml.teacher import build_teacher

from ltcore import Plugins, hookimpl, prepare, resolve, resume, train
from ltcore.testing import FAST_SETTINGS

CORE = [*FAST_SETTINGS, "imbalance_factor=100", "views.classifier=standard", "views.contrastive=standard"]
SETTINGS = [*CORE, "gml.queue_size=128"]


class KillAfterEpoch:
    """Interrupts the run once, after the student stage's first epoch was saved, as a killed
    process would."""

    armed = True

    @hookimpl
    def epoch_start(self, run, stage, epoch):
        if stage.name == "train" and epoch == 1 and self.armed:
            self.armed = False
            raise KeyboardInterrupt


def test_killed_student_stage_resumes_to_identical_metrics(isolated):
    plugins = Plugins(extra={"killer": KillAfterEpoch()})
    base = resolve(plugins, ["ce"], assignments=CORE)
    run = prepare(plugins, ["ce"], base)
    teacher = build_teacher(run, "resnet8")
    torch.save({"modules": {f"teacher.{k}": v for k, v in teacher.state_dict().items()},
                "settings": base.to_dict(), "plugins": ["ce"]}, isolated / "teacher.pt")
    assignments = [*SETTINGS, f"gml.teacher={isolated / 'teacher.pt'}"]

    full = train(plugins, ["gml"], resolve(plugins, ["gml"], assignments=assignments,
                                           overrides={"epochs": 2}), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(plugins, ["gml", "killer"], resolve(plugins, ["gml", "killer"], assignments=assignments,
                                                  overrides={"epochs": 2}), progress=False)
    run_id = next(ids for p in (isolated / "runs").iterdir()
                  if (ids := (p / "run_id").read_text().strip()) != full.run_id)
    resumed = resume(plugins, run_id, progress=False)
    assert resumed.metrics == full.metrics
    ours = torch.load(resumed.run_dir / "model.pt", weights_only=False)["modules"]
    theirs = torch.load(full.run_dir / "model.pt", weights_only=False)["modules"]
    for key in ("gml_queue.queue_features", "gml_queue.pointers", "gml_queue.queue_indices",
                "model.heads.gml_temperature.log_temperature"):
        assert torch.equal(ours[key], theirs[key]), key
