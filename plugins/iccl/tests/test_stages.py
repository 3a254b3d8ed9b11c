"""The two ICCL stages trained in-process on the embedded dataset: the warm-up switch at epoch T,
the interpolated view, the centroid EMA inside the loop, and what stage 2 may change."""

import torch

from ltcore import Plugins, hookimpl, resolve, train
from ltcore.testing import FAST_SETTINGS, mlflow_client, recorded_runs


def _copy(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Probe:
    """Records what the steps of a run saw; ``trylast`` so it runs after the iccl hooks."""

    def __init__(self):
        self.steps = []
        self.snapshots = {}

    @hookimpl(trylast=True)
    def step_end(self, step):
        record = {"stage": step.stage.name, "epoch": step.epoch, "images": set(step.images),
                  "extras": set(step.extras), "labels": step.labels,
                  "centroids": step.run.modules["iccl_centroids"].centroids.clone()}
        if step.stage.name == "train":
            record["z"] = step.embeddings["cls"].detach().clone()
            if "iccl_mix" in step.images:
                record["mix"] = (step.images["cls"], step.images["iccl_tail"],
                                 step.images["iccl_mix"], step.extras["iccl.lambda"])
        self.steps.append(record)

    @hookimpl(trylast=True)
    def stage_start(self, run, stage):
        self.snapshots[f"{stage.name}:start"] = self._state(run)

    @hookimpl(trylast=True)
    def stage_end(self, run, stage):
        self.snapshots[f"{stage.name}:end"] = self._state(run)

    @staticmethod
    def _state(run):
        model = run.model
        return {"backbone": _copy(model.backbone), "classifier": _copy(model.classifier),
                "projection": _copy(model.heads["projection"]),
                "centroids": _copy(run.modules["iccl_centroids"]),
                "teacher": _copy(run.modules["iccl_teacher"])}


def test_two_stages_warmup_switch_centroids_and_frozen_encoder(isolated):
    probe = Probe()
    plugins = Plugins(extra={"probe": probe})
    selected = ["iccl", "probe"]
    settings = resolve(plugins, selected, assignments=[
        *FAST_SETTINGS, "imbalance_factor=100", "iccl.warmup_epochs=1", "iccl.classifier_epochs=1",
        "iccl.classifier_trainable=classifier", "iccl.centroid_momentum=0.9",
        "iccl.centroid_update=batch-mean", "iccl.normalize_centroids=false"],
        overrides={"epochs": 2})
    result = train(plugins, selected, settings, progress=False)
    assert "test/acc" in result.metrics

    # -- the switch at epoch T = 1: x^f exists (and is lambda x^h + (1 - lambda) x^t) only from T
    train_steps = [s for s in probe.steps if s["stage"] == "train"]
    warmup = [s for s in train_steps if s["epoch"] == 0]
    interpolative = [s for s in train_steps if s["epoch"] == 1]
    assert warmup and interpolative
    for s in warmup:
        assert "iccl_mix" not in s["images"] and "iccl.lambda" not in s["extras"]
        assert set(s["labels"]) == {"sample", "paired"}
    for s in interpolative:
        head, tail, mix, lam = s["mix"]
        assert lam.shape == (len(head),) and bool(((lam >= 0) & (lam <= 1)).all())
        weight = lam[:, None, None, None]
        torch.testing.assert_close(mix, weight * head + (1 - weight) * tail)
    lams = torch.cat([s["mix"][3] for s in interpolative])
    assert lams.std() > 0.1  # one weight per sample, not per batch

    client = mlflow_client()
    stages = {r.data.tags["ltcore.stage"]: r for r in recorded_runs(client, nested=True)}

    def history(stage, key):
        return [m.value for m in sorted(client.get_metric_history(stages[stage].info.run_id, key),
                                        key=lambda m: m.step)]

    assert history("train", "iccl/interpolative") == [0.0, 1.0]
    warm = history("train", "train/loss/iccl-cc-warmup")
    inter = history("train", "train/loss/iccl-cc-it")
    assert warm[0] > 0 and warm[1] == 0 and inter[0] == 0 and inter[1] > 0
    ce_it = history("train", "train/loss/iccl-ce-it")
    assert ce_it[0] == 0 and ce_it[1] > 0
    assert history("train", "iccl/centroids_seen")[-1] == 10.0

    # -- the centroid EMA inside the loop: after each step c <- m c + (1 - m) mean(z of class k)
    previous = torch.zeros_like(train_steps[0]["centroids"])
    seen = torch.zeros(len(previous), dtype=torch.bool)
    for s in train_steps:
        labels = s["labels"]["sample"]
        expected = previous.clone()
        for k in labels.unique().tolist():
            mean = s["z"][labels == k].mean(0)
            expected[k] = 0.9 * previous[k] + 0.1 * mean if seen[k] else mean
            seen[k] = True
        torch.testing.assert_close(s["centroids"], expected, rtol=1e-5, atol=1e-6)
        previous = s["centroids"]

    # -- stage 2: only the classifier changes; the teacher is the stage-1 network
    start, end = probe.snapshots["classifier:start"], probe.snapshots["classifier:end"]
    assert _same(start["backbone"], end["backbone"])  # weights and BatchNorm statistics
    assert _same(start["projection"], end["projection"])
    assert _same(start["centroids"], end["centroids"])
    assert not _same(start["classifier"], end["classifier"])
    assert _same(start["teacher"], start["classifier"])  # frozen encoder: classifier-only teacher
    assert _same(start["teacher"], end["teacher"])
    assert _same(probe.snapshots["train:end"]["classifier"], start["classifier"])
    assert all(s["stage"] == "classifier" for s in probe.steps[len(train_steps):])
    assert all("iccl_mix" not in s["images"] for s in probe.steps[len(train_steps):])
    params = stages["classifier"].data.params
    assert params["stage.sampler"] == "class-aware" and params["stage.trainable"] == "classifier"
    assert params["stage.losses"] == "1*iccl-distill"
    assert history("classifier", "train/lr") == [settings.run.optim.lr * 0.1]
    assert len(history("classifier", "val/acc")) == 1

    # -- after stage 1, the centroids' norms are recorded per class (the paper's Fig. 2)
    (table,) = isolated.glob("runs/*/artifacts/iccl/centroid_norms.csv")
    rows = [line.split(",") for line in table.read_text().splitlines()]
    assert rows[0] == ["class_index", "class", "train_count", "centroid_norm"] and len(rows) == 11
    centroids = probe.snapshots["train:end"]["centroids"]["centroids"]
    norms = [float(r[3]) for r in rows[1:]]
    assert norms == [float(f"{n:.6f}") for n in centroids.norm(dim=1).tolist()]
    parent = recorded_runs(client, nested=False)[0]
    assert "iccl/centroid_norms.csv" in {a.path for a in client.list_artifacts(parent.info.run_id,
                                                                               "iccl")}
