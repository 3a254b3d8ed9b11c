"""Stage 2 with the encoder fine-tuned: what it trains, and resuming inside it (the teacher is a
checkpointed module, so a resumed run ends with the same numbers as an uninterrupted one)."""

import pytest
import torch
from ltcore_iccl.method import FineTuneGroups

from ltcore import ModelBundle, Plugins, RunStopped, hookimpl, resolve, resume, train
from ltcore.testing import FAST_SETTINGS, mlflow_client, recorded_runs, run_folder, SignalAtStep

SETTINGS = [*FAST_SETTINGS, "imbalance_factor=100", "iccl.warmup_epochs=0", "iccl.classifier_epochs=2",
            "iccl.classifier_trainable=all", "iccl.encoder_lr_scale=0.5"]


def _copy(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


class Snapshots:
    """Model, head and teacher states when the rebalancing stage starts and ends."""

    def __init__(self):
        self.states = {}

    @hookimpl(trylast=True)
    def stage_start(self, run, stage):
        self._take(run, f"{stage.name}:start")

    @hookimpl(trylast=True)
    def stage_end(self, run, stage):
        self._take(run, f"{stage.name}:end")

    def _take(self, run, key):
        teacher = run.modules["iccl_teacher"]
        self.states[key] = {"backbone": _copy(run.model.backbone),
                            "classifier": _copy(run.model.classifier),
                            "projection": _copy(run.model.heads["projection"]),
                            "teacher_backbone": _copy(teacher.backbone),
                            "teacher_classifier": _copy(teacher.classifier)}


class KillInRebalancing:
    """Interrupts the run once, at the end of the second epoch of stage ``classifier``."""

    def __init__(self):
        self.fired = False

    @hookimpl
    def epoch_end(self, run, stage, epoch, metrics):
        if stage.name == "classifier" and epoch == 1 and not self.fired:
            self.fired = True
            raise KeyboardInterrupt


def test_fine_tune_groups_scale_the_encoder_and_leave_heads_out():
    model = ModelBundle(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model.heads["projection"] = torch.nn.Linear(4, 8)
    backbone, classifier = FineTuneGroups(0.25)(model)
    assert backbone["lr_scale"] == 0.25 and classifier["lr_scale"] == 1.0
    ids = {id(p) for group in (backbone, classifier) for p in group["params"]}
    assert ids == {id(p) for p in [*model.backbone.parameters(), *model.classifier.parameters()]}


def test_fine_tuned_stage_and_resume_inside_it(isolated):
    snapshots = Snapshots()
    killer = KillInRebalancing()
    plugins = Plugins(extra={"snapshots": snapshots, "killer": killer})
    settings = resolve(plugins, ["iccl", "snapshots"], assignments=SETTINGS, overrides={"epochs": 1})
    full = train(plugins, ["iccl", "snapshots"], settings, progress=False)

    start, end = snapshots.states["classifier:start"], snapshots.states["classifier:end"]
    assert not _same(start["backbone"], end["backbone"])  # encoder fine-tuned
    assert not _same(start["classifier"], end["classifier"])
    assert _same(start["projection"], end["projection"])  # projection head dropped
    assert _same(start["teacher_backbone"], start["backbone"])  # teacher = stage-1 network
    assert _same(start["teacher_classifier"], start["classifier"])
    assert _same(start["teacher_backbone"], end["teacher_backbone"])
    assert _same(start["teacher_classifier"], end["teacher_classifier"])

    killed_settings = resolve(plugins, ["iccl", "killer"], assignments=SETTINGS, overrides={"epochs": 1})
    try:
        train(plugins, ["iccl", "killer"], killed_settings, progress=False)
    except KeyboardInterrupt:
        pass
    assert killer.fired
    run_id = next(ids for p in (isolated / "runs").iterdir()
                  if (ids := (p / "run_id").read_text().strip()) != full.run_id)
    saved = torch.load(run_folder(isolated / "runs", run_id) / "checkpoint.pt", weights_only=False)
    assert saved["position"] == (1, 1) and saved["plugin_objects"]["iccl"]["teacher_snapshot"] is True
    assert any(k.startswith("iccl_teacher.") for k in saved["modules"])

    resumed = resume(plugins, run_id, progress=False)
    assert resumed.metrics == full.metrics
    client = mlflow_client()
    stage_id = next(r.info.run_id for r in recorded_runs(client, nested=True)
                    if r.data.tags["mlflow.parentRunId"] == run_id
                    and r.data.tags["ltcore.stage"] == "classifier")
    lrs = sorted(client.get_metric_history(stage_id, "train/lr"), key=lambda m: m.step)
    assert [m.step for m in lrs] == [0, 1]
    assert lrs[0].value == settings.run.optim.lr * 0.1  # cosine from optim.lr x classifier_lr_scale


def test_run_stopped_by_sigterm_inside_an_interpolating_epoch_resumes_identically(isolated):
    """SIGTERM after step 3 of 5 of the first epoch after warm-up (images interpolated, weights
    drawn from the plugin's generator, pairs from the class-aware sampler): the run continues
    at the next step and ends, after its classifier stage, with the uninterrupted run's
    numbers."""
    stopper = SignalAtStep("train", 7)
    plugins = Plugins(extra={"signal": stopper})
    settings = resolve(plugins, ["iccl"], overrides={"epochs": 2}, assignments=[
        *FAST_SETTINGS, "imbalance_factor=100", "iccl.warmup_epochs=1", "iccl.classifier_epochs=1"])
    full = train(plugins, ["iccl"], settings, progress=False)
    with pytest.raises(RunStopped, match="epoch 2/2 after step 3/5") as stopped:
        train(plugins, ["iccl", "signal"], settings, progress=False)
    assert stopped.value.signal_name == "SIGTERM" and stopper.sent
    run_id = next(ids for p in (isolated / "runs").iterdir()
                  if (ids := (p / "run_id").read_text().strip()) != full.run_id)
    assert resume(plugins, run_id, progress=False).metrics == full.metrics
