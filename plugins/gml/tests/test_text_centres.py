"""GML with text features as the mixture centres (sec. 3.4, Table 4): the loss against the
paper's formula (one case by hand), the option checks, the presets, the paper's numbers and a
short run of a tiny CLIP model on digits-lt."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from ltcore_gml.text import flat_centres, text_centre_loss

from ltcore import ConfigError, Plugins, hookimpl, prepare, resolve, train
from ltcore.testing import FAST_SETTINGS, mlflow_client, recorded_runs

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                            "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                          "layers": 1}}
TEXT_SETTINGS = [*FAST_SETTINGS, "device=cpu", "gml.centres=text", "gml.distill=false",
                 "views.classifier=standard", 'clip.templates=["a photo of a {}.", "a {}."]']


def direct_text_centre_loss(query, labels, class_features, prior, temperature, alpha):
    """The paper's formula entry by entry (float64): per query and class, the log of the mean
    over that class's T prompt features of exp(z . t / tau), + alpha log pi, cross-entropy."""
    query = F.normalize(query.double(), dim=1)
    losses = []
    for b in range(len(query)):
        logits = []
        for c in range(class_features.shape[0]):
            terms = [math.exp(float(query[b] @ t.double()) / temperature)
                     for t in class_features[c]]
            logits.append(math.log(sum(terms) / len(terms)) + alpha * math.log(float(prior[c])))
        total = math.log(sum(math.exp(v) for v in logits))
        losses.append(total - logits[int(labels[b])])
    return sum(losses) / len(losses)


def test_two_classes_two_prompts_by_hand():
    # class 0: prompts (1, 0) and (0, 1); class 1: (-1, 0) and (0, -1); query (1, 0) of class 0,
    # tau 1, prior (3/4, 1/4), alpha 1. s_0 = log((e + 1) / 2), s_1 = log((1/e + 1) / 2), so
    # l_1 - l_0 = log((1/e + 1) / (e + 1)) + log(1/3) = -1 - log 3: loss = log(1 + 1 / (3e)).
    centres = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]])
    loss = text_centre_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), centres,
                            torch.tensor([0.75, 0.25]), 1.0, 1.0)
    assert float(loss) == pytest.approx(math.log(1 + 1 / (3 * math.e)), rel=1e-6)
    assert float(loss) == pytest.approx(0.115671, abs=1e-6)


@pytest.mark.parametrize("batch, classes, templates, dim, temperature, alpha",
                         [(1, 2, 1, 2, 0.5, 1.0), (5, 3, 4, 8, 0.07, 1.0),
                          (7, 6, 3, 5, 0.1, 0.3), (4, 4, 80, 16, 0.01, 0.0)])
def test_matches_the_papers_formula(batch, classes, templates, dim, temperature, alpha):
    gen = torch.Generator().manual_seed(batch * 100 + templates)
    query = torch.randn(batch, dim, generator=gen)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    class_features = F.normalize(torch.randn(classes, templates, dim, generator=gen), dim=-1)
    prior = torch.rand(classes, generator=gen) + 0.05
    prior = prior / prior.sum()
    loss = text_centre_loss(query, labels, class_features, prior, temperature, alpha)
    expected = direct_text_centre_loss(query, labels, class_features, prior, temperature, alpha)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_flat_centres_keep_each_prompt_with_its_class():
    features = torch.arange(3 * 2 * 4, dtype=torch.float32).reshape(3, 2, 4)
    centres, labels = flat_centres(features)
    assert centres.shape == (6, 4) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(centres[3], features[1, 1])


class FirstStep:
    """Keeps the text-centre tensors of the first training step."""

    def __init__(self):
        self.first = None

    @hookimpl
    def step_end(self, step):
        if self.first is None and step.stage.name == "train":
            out = step.extras["gml"]
            self.first = {k: v.detach().clone() for k, v in out.items() if torch.is_tensor(v)}
            self.first["losses"] = {k: v.clone() for k, v in out["losses"].items()}
            self.first["prior"] = step.run.class_prior.cpu()


def text_run(tmp_path, *assignments, extra=None):
    """Settings of a text-centre run of a tiny CLIP model (its configuration in a JSON file)."""
    pytest.importorskip("open_clip")
    path = tmp_path / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    plugins = Plugins(extra=extra)
    selected = ["gml", *(extra or {})]
    assignments = [*TEXT_SETTINGS, f"model.backbone=clip:{path}", *assignments]
    settings = resolve(plugins, selected, assignments=assignments, overrides={"epochs": 1})
    return plugins, selected, settings


def test_refuses_what_text_centres_cannot_honour(isolated):
    import attrs
    from ltcore_gml.plugin import Options
    from ltcore_gml.text import refuse_text_mode_conflicts

    plugins = Plugins()
    settings = resolve(plugins, ["gml"], assignments=[*FAST_SETTINGS, "device=cpu",
                                                      "gml.centres=text", "gml.distill=false"])
    with pytest.raises(ConfigError, match=r"model.backbone = 'resnet8'.*clip:RN50"):
        prepare(plugins, ["gml"], settings)
    text = Options(centres="text", distill=False)
    refuse_text_mode_conflicts(text)
    for changes, key in (({"teacher": "runs/x"}, "gml.teacher"),
                         ({"teacher_backbone": "resnet8"}, "gml.teacher_backbone"),
                         ({"key_view": "standard"}, "gml.key_view"),
                         ({"teacher_epochs": 2}, "gml.teacher_epochs"),
                         ({"distill": True}, "gml.distill")):
        with pytest.raises(ConfigError, match=key):
            refuse_text_mode_conflicts(attrs.evolve(text, **changes))
    refuse_text_mode_conflicts(attrs.evolve(text, distill=True, kd_weight=0.0))
    settings = resolve(plugins, ["gml"], assignments=[*FAST_SETTINGS, "device=cpu",
                                                      "gml.text_classifier_init=random"])
    with pytest.raises(ConfigError, match="gml.text_classifier_init"):
        prepare(plugins, ["gml"], settings)


def test_zero_shot_classifier_and_a_learned_temperature_in_its_own_group(isolated, tmp_path):
    from ltcore.testing import parameter_groups

    plugins, selected, settings = text_run(tmp_path)
    run = prepare(plugins, selected, settings)
    model = run.main_stage.model
    names = [str(c) for c in run.dataset.classes]
    zero_shot = model.backbone.zero_shot_weights(names, run.config.clip.templates)
    assert torch.allclose(model.classifier.weight, zero_shot)
    assert "gml_key" not in model.heads and "teacher" not in run.modules
    assert [s.name for s in run.stages] == ["train"]
    assert [t.name for t in run.main_stage.losses] == ["la-ce", "gml", "gml-temperature"]
    assert list(run.main_stage.views) == ["cls"]
    assert "gml text centres: 10 classes x 2 prompts, e.g. 'a photo of a 0.'" in run.model_notes
    assert not any("named by number" in w for w in run.dataset.warnings)
    groups = parameter_groups(run, run.main_stage)
    tau = model.heads["gml_temperature"].log_temperature
    assert next(g for g in groups if any(p is tau for p in g["params"]))["weight_decay"] == 0.0
    text = [p for n, p in model.backbone.named_parameters() if not n.startswith("clip.visual")]
    assert text and not any(p.requires_grad for p in text)


def test_short_run_on_digits_matches_the_formula(isolated, tmp_path):
    spy = FirstStep()
    plugins, selected, settings = text_run(tmp_path, "gml.temperature=0.2",
                                           extra={"spy": spy})
    result = train(plugins, selected, settings, progress=False)
    first = spy.first
    centres, labels = first["bank"], first["bank_labels"]
    assert centres.shape == (10 * 2, 16) and labels.tolist() == [c // 2 for c in range(20)]
    class_features = centres.reshape(10, 2, 16)
    expected = direct_text_centre_loss(first["query"], first["labels"], class_features,
                                       first["prior"], 0.2, 1.0)
    assert float(first["losses"]["gml"]) == pytest.approx(expected, rel=1e-5)
    # no centre comes from an image: the temperature loss is the same value
    assert float(first["losses"]["gml-temperature"]) == pytest.approx(expected, rel=1e-5)
    metrics = mlflow_client().get_run(result.run_id).data.metrics
    assert math.isfinite(metrics["test/acc"])
    stage_runs = recorded_runs(mlflow_client(), nested=True)
    tau = [r.data.metrics["train/gml_temperature"] for r in stage_runs
           if r.data.tags.get("ltcore.stage") == "train"]
    assert tau and tau[0] != pytest.approx(0.2, abs=1e-7)


def test_classes_named_by_index_are_warned_of():
    from types import SimpleNamespace

    from ltcore_gml.text import describe_prompts

    pytest.importorskip("open_clip")
    run = SimpleNamespace(model_notes=[], dataset=SimpleNamespace(name="imagenet-lt", warnings=[]))
    describe_prompts(run, [str(i) for i in range(1000)], ["simple"])
    assert run.model_notes == ["gml text centres: 1000 classes x 1 prompts, e.g. 'a photo of a 0.'"]
    assert "imagenet-lt are named by number" in run.dataset.warnings[0]
    describe_prompts(run, ["tench", "goldfish"] * 6, ["simple"])
    assert len(run.dataset.warnings) == 1


def fake_run(run_id, dataset, backbone, centres="text", epochs="50", factor="natural"):
    from types import SimpleNamespace

    tags = {"ltcore.plugins": "gml", "plugins": "gml", "seed": "0", "dataset": dataset,
            "imbalance_factor": factor}
    params = {"model.backbone": backbone, "gml.centres": centres, "epochs": epochs}
    info = SimpleNamespace(run_id=run_id, start_time=1_000_000, end_time=1_060_000,
                           status="FINISHED", experiment_id="1")
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags, params=params,
                                                           metrics={"test/acc": 70.0}))


def test_table_4_numbers_beside_runs_of_the_same_backbone():
    from ltcore import experiments as ex

    runs = [fake_run("a", "imagenet-lt", "clip:RN50"),
            fake_run("b", "imagenet-lt", "clip:ViT-B-16"),
            fake_run("c", "inaturalist2018", "clip:ViT-B-16"),
            fake_run("d", "imagenet-lt", "resnext50", centres="contrast"),
            fake_run("e", "cifar100-lt", "resnet32", "contrast", epochs="400", factor="100")]
    comparison = ex.compare(None, runs, ["dataset", "params.model.backbone"], ["test"],
                            reference=ex.load_reference("papers"))
    found = {tuple(row.key.values()): (row.reference.get("test/acc"), row.reference_source)
             for row in comparison.rows}
    assert found[("imagenet-lt", "clip:RN50")][0] == 70.9
    assert "VL-LTR 70.1" in found[("imagenet-lt", "clip:RN50")][1]
    assert "zero-shot CLIP 59.8" in found[("imagenet-lt", "clip:RN50")][1]
    assert found[("imagenet-lt", "clip:ViT-B-16")][0] == 78.0
    assert found[("inaturalist2018", "clip:ViT-B-16")][0] == 82.1
    assert found[("imagenet-lt", "resnext50")][0] is None
    assert found[("cifar100-lt", "resnet32")][0] == 54.0


def test_clip_presets_carry_vl_ltr_settings():
    plugins = Plugins()
    rn50 = resolve(plugins, ["gml"], presets=["imagenet-lt-clip-rn50"]).run
    vit = resolve(plugins, ["gml"], presets=["imagenet-lt-clip-vitb16"]).run
    inat_settings = resolve(plugins, ["gml"], presets=["inaturalist2018-clip-vitb16"])
    inat = inat_settings.run
    assert (rn50.model.backbone, rn50.batch_size, rn50.optim.lr) == ("clip:RN50", 2048, 5e-5)
    assert (vit.model.backbone, vit.batch_size, vit.optim.lr) == ("clip:ViT-B-16", 1024, 3.5e-5)
    assert (inat.model.backbone, inat.optim.lr, inat.epochs) == ("clip:ViT-B-16", 3.5e-4, 100)
    assert inat.model.backbone_options == {"force_image_size": 384} and inat.views.image_size == 384
    for run in (rn50, vit, inat):
        assert run.model.pretrained == "hub" and run.optim.name == "adamw"
        assert run.optim.weight_decay == 0.05 and run.schedule.kind == "timm:cosine"
        assert run.schedule.warmup_epochs == 5 and run.imbalance_factor == "natural"
    assert rn50.epochs == vit.epochs == 50 and rn50.views.image_size == vit.views.image_size == 224
    gml = inat_settings.plugins["gml"]
    assert gml.centres == "text" and not gml.distill and gml.text_classifier_init == "zero-shot"


@pytest.mark.parametrize("preset", ["imagenet-lt-clip-rn50", "imagenet-lt-clip-vitb16",
                                    "inaturalist2018-clip-vitb16"])
def test_table_4_presets_resolve_with_print_config(ltrun, preset):
    result = ltrun("--plugin", "gml", "--preset", preset, "--print-config")
    assert result.exit_code == 0, result.stderr
    assert 'centres = "text"' in result.output and 'pretrained = "hub"' in result.output


def test_inaturalist_clip_preset_on_a_small_tree(ltrun, tmp_path):
    """The iNaturalist preset (timm cosine with warm-up, AdamW, RandAugment views, natural
    imbalance) with the tiny CLIP model at 32 px on a tree in iNaturalist 2018's layout, then
    ``ltrun evaluate`` of its model."""
    import re

    from ltcore.testing import make_benchmark_tree

    pytest.importorskip("open_clip")
    tree = make_benchmark_tree(tmp_path / "inat", "inaturalist2018")
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    result = ltrun("--plugin", "gml", "--preset", "inaturalist2018-clip-vitb16", "--data-dir",
                   str(tree), "--epochs", "1", "--batch-size", "8", "--no-progress",
                   "--set", f"model.backbone=clip:{config}", "--set", "model.pretrained=none",
                   "--set", "model.backbone_options={force_image_size = 32}",
                   "--set", "views.image_size=32",
                   "--set", "views.workers=0", "--set", "eval.batch_size=16",
                   "--set", "tracking.log_model=false", "--set", 'clip.templates=["simple"]')
    assert result.exit_code == 0, result.stderr
    assert "losses: 1 x la-ce, 1 x gml, 1 x gml-temperature" in result.output
    run_id = re.search(r"run (\S+) finished", result.output).group(1)
    assert math.isfinite(mlflow_client().get_run(run_id).data.metrics["test/acc"])
    from ltcore.testing import run_folder

    evaluated = ltrun("evaluate", "--checkpoint", str(run_folder("runs", run_id) / "model.pt"),
                      "--json")
    assert evaluated.exit_code == 0, evaluated.stderr


class KillAfterFirstEpoch:
    """Interrupts the run once, after its first epoch was saved, as a killed process would."""

    armed = True

    @hookimpl
    def epoch_start(self, run, stage, epoch):
        if epoch == 1 and self.armed:
            self.armed = False
            raise KeyboardInterrupt


def test_killed_text_centre_run_resumes_to_identical_metrics(isolated, tmp_path):
    from ltcore import resume

    plugins, selected, _ = text_run(tmp_path, extra={"killer": KillAfterFirstEpoch()})
    path = tmp_path / "tiny-clip.json"  # written by text_run
    assignments = [*TEXT_SETTINGS, f"model.backbone=clip:{path}"]
    full = train(plugins, ["gml"], resolve(plugins, ["gml"], assignments=assignments,
                                           overrides={"epochs": 2}), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(plugins, selected, resolve(plugins, selected, assignments=assignments,
                                         overrides={"epochs": 2}), progress=False)
    run_id = next(ids for p in (isolated / "runs").iterdir()
                  if (ids := (p / "run_id").read_text().strip()) != full.run_id)
    resumed = resume(plugins, run_id, progress=False)
    assert resumed.metrics == full.metrics
