"""``ltrun --plugin iccl``: both stages recorded in MLflow; presets; composition with others."""

import pytest

from ltcore import PluginError, Plugins, hookimpl, prepare, resolve, train
from ltcore.testing import FAST, FAST_SETTINGS, mlflow_client, recorded_runs


def test_ltrun_trains_both_stages_as_nested_mlflow_runs(ltrun):
    result = ltrun("--plugin", "iccl", "--epochs", "2", "--set", "iccl.warmup_epochs=1",
                   "--set", "iccl.classifier_epochs=1", *FAST)
    assert result.exit_code == 0, result.stderr
    client = mlflow_client()
    (parent,) = recorded_runs(client, nested=False)
    stages = recorded_runs(client, nested=True)
    assert parent.info.status == "FINISHED" and parent.data.tags["plugins"] == "iccl"
    assert {r.data.tags["ltcore.stage"] for r in stages} == {"train", "classifier"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in stages)
    assert all(r.info.status == "FINISHED" for r in stages)
    assert parent.data.params["iccl.warmup_epochs"] == "1"
    assert parent.data.params["iccl.distill_weight"] == "0.5"
    by_stage = {r.data.tags["ltcore.stage"]: r.info.run_id for r in stages}

    def steps(stage, key):
        return len(client.get_metric_history(by_stage[stage], key))

    for key in ("train/loss", "train/loss/ce", "train/loss/iccl-cc-warmup", "train/loss/iccl-ce-it",
                "train/loss/iccl-cc-it", "iccl/interpolative", "val/acc", "val/many"):
        assert steps("train", key) == 2, key
    for key in ("train/loss", "train/loss/iccl-distill", "train/lr", "val/acc", "val/few"):
        assert steps("classifier", key) == 1, key
    # the test split at each stage's end only: in its evaluation/figures.csv (and the parent's)
    for stage in ("train", "classifier"):
        assert steps(stage, "test/acc") == 0
        table = client.download_artifacts(by_stage[stage], "evaluation/figures.csv")
        assert "test/acc," in open(table).read()
    switch = client.get_metric_history(by_stage["train"], "iccl/interpolative")
    assert [m.value for m in sorted(switch, key=lambda m: m.step)] == [0.0, 1.0]
    assert "test/acc" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(by_stage["classifier"], "evaluation")}
    assert "evaluation/test_per_class_accuracy.csv" in artifacts


@pytest.mark.parametrize(("preset", "dataset", "warmup"),
                         [("cifar10-lt", "cifar10-lt", 100), ("cifar100-lt", "cifar100-lt", 80)])
def test_cifar_presets_follow_the_paper(preset, dataset, warmup):
    settings = resolve(Plugins(), ["iccl"], presets=[preset])
    run, options = settings.run, settings.plugins["iccl"]
    assert run.dataset == dataset and run.imbalance_factor == 100.0
    assert (run.model.backbone, run.model.projection_dim, run.batch_size, run.epochs) == ("resnet32", 32, 128, 200)
    assert (run.optim.lr, run.optim.weight_decay, run.views.classifier) == (0.1, 2e-4, "standard")
    assert (run.schedule.kind, run.schedule.warmup_epochs, run.schedule.milestones, run.schedule.gamma) == (
        "step", 5, (120, 160), 0.01)
    assert (options.temperature, options.warmup_epochs, options.uniform_weight) == (0.3, warmup, 0.0)
    assert (options.gamma, options.centroid_momentum, options.alpha) == (0.0, 0.99, 1.0)
    assert (options.classifier_trainable, options.classifier_lr_scale, options.classifier_gamma) == ("all", 0.1, 1.0)
    assert (options.distill_weight, options.distill_temperature) == (0.5, 10.0)


def test_large_scale_presets():
    plugins = Plugins()
    imagenet = resolve(plugins, ["iccl"], presets=["imagenet-lt"])
    assert (imagenet.run.model.backbone, imagenet.run.epochs, imagenet.run.batch_size) == ("resnext50", 90, 256)
    assert imagenet.plugins["iccl"].warmup_epochs == 40 and imagenet.plugins["iccl"].temperature == 0.07
    assert imagenet.plugins["iccl"].classifier_trainable == "classifier"
    for preset, epochs, warmup in (("inaturalist2018", 90, 40), ("inaturalist2018-200", 200, 100)):
        inat = resolve(plugins, ["iccl"], presets=[preset])
        assert (inat.run.model.backbone, inat.run.optim.lr, inat.run.batch_size) == ("resnet50", 0.2, 512)
        assert (inat.run.epochs, inat.plugins["iccl"].warmup_epochs) == (epochs, warmup)


def _prepared(plugins, selected, *assignments):
    settings = resolve(plugins, selected, assignments=[*FAST_SETTINGS, *assignments], overrides={"epochs": 4})
    return prepare(plugins, selected, settings)


def test_assembled_run_and_default_warmup_is_half_the_epochs():

    run = _prepared(Plugins(), ["iccl"])
    assert [s.name for s in run.stages] == ["train", "classifier"]
    train, classifier = run.stages
    assert train.sampler == "iccl-paired" and train.sampler_options["gamma"] == 0.0
    assert {r: (v.pipeline, v.source) for r, v in train.views.items()} == {
        "cls": ("standard", "sample"), "iccl_tail": ("standard", "paired"), "iccl_mix": (None, "sample")}
    assert [t.name for t in train.losses] == ["ce", "iccl-cc-warmup", "iccl-ce-it", "iccl-cc-it"]
    assert run.plugin_object("iccl").warmup_epochs == 2
    assert classifier.sampler == "class-aware" and classifier.sampler_options == {"gamma": 1.0}
    assert classifier.trainable == "classifier" and classifier.epochs == 10
    assert classifier.optim.lr == pytest.approx(run.config.optim.lr * 0.1)
    assert classifier.schedule.kind == "cosine" and classifier.schedule.warmup_epochs == 0
    assert list(classifier.views) == ["cls"]
    assert {"iccl_centroids", "iccl_teacher"} <= set(run.modules)

    separate = _prepared(Plugins(), ["iccl"], "iccl.head_view=separate", "iccl.classifier_epochs=0")
    assert [s.name for s in separate.stages] == ["train"]
    assert separate.main_stage.views["iccl_head"].source == "sample"
    assert "iccl_teacher" not in separate.modules


def test_a_classifier_loss_plugin_replaces_the_uniform_branch_ce():
    run = _prepared(Plugins(), ["iccl", "la"])
    assert run.main_stage.classifier_loss.name == "la-ce"
    assert [t.name for t in run.main_stage.losses][1:] == ["iccl-cc-warmup", "iccl-ce-it", "iccl-cc-it"]


class SamplerSetter:
    @hookimpl
    def setup_run(self, run):
        run.main_stage.sampler = "class-balanced"


class ClassifierStage:
    @hookimpl
    def setup_run(self, run):
        run.add_stage(run.new_stage("classifier", 1, plugin="other-stage"))


def test_clashes_with_other_plugins_are_named():
    plugins = Plugins(extra={"sampler-setter": SamplerSetter(), "other-stage": ClassifierStage()})
    with pytest.raises(PluginError, match="iccl.*sampler"):
        _prepared(plugins, ["sampler-setter", "iccl"])
    with pytest.raises(PluginError, match="other-stage.*iccl|iccl.*other-stage"):
        _prepared(plugins, ["other-stage", "iccl"])


class LateSamplerSetter:
    @hookimpl(trylast=True)
    def setup_run(self, run):
        run.main_stage.sampler = "class-balanced"


def test_a_sampler_replaced_after_iccl_set_up_is_caught_when_the_stage_starts():
    plugins = Plugins(extra={"late-sampler": LateSamplerSetter()})
    settings = resolve(plugins, ["iccl", "late-sampler"], assignments=FAST_SETTINGS, overrides={"epochs": 1})
    with pytest.raises(PluginError, match="replaced it with 'class-balanced'"):
        train(plugins, ["iccl", "late-sampler"], settings, progress=False)
    (parent,) = recorded_runs(mlflow_client(), nested=False)
    assert parent.info.status == "FAILED"


def test_rcl_rebalances_the_centroid_losses():
    pytest.importorskip("ltcore_rcl.plugin")
    import torch
    import torch.nn.functional as F
    from ltcore_iccl import centroid_contrastive_loss

    from ltcore import Step

    run = _prepared(Plugins(), ["iccl", "rcl"], "rcl.compression=false")
    state = run.plugin_object("iccl")
    gen = torch.Generator().manual_seed(0)
    batch, classes = 6, run.dataset.num_classes
    labels_a = torch.randint(0, classes, (batch,), generator=gen)
    labels_b = torch.randint(0, classes, (batch,), generator=gen)
    state.provider.update(F.normalize(torch.randn(40, run.config.model.projection_dim, generator=gen), dim=1),
                          torch.arange(40) % classes)
    step = Step(run, run.main_stage, 3, 0, {}, {"sample": labels_a, "paired": labels_b}, {})
    step.embeddings["iccl_mix"] = F.normalize(torch.randn(batch, run.config.model.projection_dim, generator=gen), dim=1)
    step.extras["iccl.lambda"] = torch.rand(batch, generator=gen)
    state.set_phase(3)
    loss = run.main_stage.loss("iccl-cc-it")(step)
    prior = run.class_counts.float().log()[None, :]
    expected = centroid_contrastive_loss(step.embeddings["iccl_mix"], state.provider.centroids, labels_a,
                                         labels_b, step.extras["iccl.lambda"], state.options.temperature,
                                         logit_bias=prior)
    torch.testing.assert_close(loss, expected)
    plain = centroid_contrastive_loss(step.embeddings["iccl_mix"], state.provider.centroids, labels_a,
                                      labels_b, step.extras["iccl.lambda"], state.options.temperature)
    assert not torch.allclose(loss, plain)


def test_teacher_snapshot_happens_once_and_reset_classifier_is_seeded():
    import torch


    def prepared_state():
        run = _prepared(Plugins(), ["iccl"], "iccl.reset_classifier=true")
        return run, run.plugin_object("iccl")

    run, state = prepared_state()
    before = {k: v.clone() for k, v in run.model.classifier.state_dict().items()}
    state.snapshot_teacher(run)
    teacher = run.modules["iccl_teacher"].state_dict()
    assert all(torch.equal(teacher[k], before[k]) for k in before)  # frozen encoder: classifier teacher
    after = run.model.classifier.state_dict()
    assert not torch.equal(after["weight"], before["weight"])
    assert run.plugin_object("iccl").state_dict()["teacher_snapshot"] is True
    state.snapshot_teacher(run)  # a resumed stage 2 keeps its teacher and its classifier
    assert torch.equal(run.model.classifier.weight, after["weight"])

    other_run, other_state = prepared_state()
    other_state.snapshot_teacher(other_run)
    assert torch.equal(other_run.model.classifier.weight, run.model.classifier.weight)
