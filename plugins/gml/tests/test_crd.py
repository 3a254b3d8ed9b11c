"""The crd plugin (Contrastive Representation Distillation, Tian et al. 2020): its NCE loss,
memory and negatives against direct computations of the paper's / reference code's formulas,
and a short real run."""

import math

import pytest
import torch
from ltcore_gml.crd import _memory_module, contrast, draw_negatives, nce_loss

from ltcore import ConfigError, Plugins, hookimpl, resolve, train
from ltcore.testing import FAST_SETTINGS


def direct_nce(h, data_size):
    """-1/B sum_i [log(h_i0 / (h_i0 + K/N + eps)) + sum_k log((K/N) / (h_ik + K/N + eps))]."""
    batch, width = len(h), len(h[0])
    noise = (width - 1) / data_size
    total = 0.0
    for row in h:
        total += math.log(row[0] / (row[0] + noise + 1e-7))
        total += sum(math.log(noise / (x + noise + 1e-7)) for x in row[1:])
    return -total / batch


def test_nce_loss_is_the_papers():
    h = torch.rand(3, 6, dtype=torch.float64) * 2
    assert float(nce_loss(h, 50)) == pytest.approx(direct_nce(h.tolist(), 50), rel=1e-12)


def test_contrast_normaliser_and_memory_update():
    torch.manual_seed(0)
    memory = _memory_module()(10, 4)
    bound = 1 / math.sqrt(4 / 3)
    assert float(memory.student.abs().max()) <= bound and float(memory.z[0]) == -1
    anchors = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    idx = torch.tensor([[1, 4, 7], [3, 3, 0]])
    first = contrast(anchors, memory.teacher, idx, 0.07, memory.z, 0)
    raw = [[math.exp(float(memory.teacher[j] @ anchors[b]) / 0.07) for j in idx[b].tolist()]
           for b in range(2)]
    z = sum(map(sum, raw)) / 6 * 10  # mean of the first step's exp(.) times N
    assert float(memory.z[0]) == pytest.approx(z, rel=1e-5)
    assert first.flatten().tolist() == pytest.approx([x / z for r in raw for x in r], rel=1e-5)
    # Z stays fixed afterwards
    contrast(2 * anchors, memory.teacher, idx, 0.07, memory.z, 0)
    assert float(memory.z[0]) == pytest.approx(z, rel=1e-5)

    before = memory.student.clone()
    rows = torch.tensor([1, 3])
    memory.update("student", rows, anchors, 0.5)
    for i, row in enumerate(rows.tolist()):
        mixed = 0.5 * before[row] + 0.5 * anchors[i]
        assert torch.allclose(memory.student[row], mixed / mixed.norm(), atol=1e-6)
    untouched = [0, 2, 4, 5, 6, 7, 8, 9]
    assert torch.equal(memory.student[untouched], before[untouched])


def test_negatives_come_from_the_other_classes():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    order = torch.argsort(labels, stable=True)
    sizes = torch.bincount(labels)
    starts = torch.cumsum(sizes, 0) - sizes
    anchors = torch.tensor([0, 1, 2, 3])
    drawn = draw_negatives(anchors, 4000, order, starts, sizes,
                           torch.Generator().manual_seed(0))
    for anchor, row in zip(anchors.tolist(), drawn):
        others = (labels != anchor).nonzero().flatten()
        counts = torch.bincount(row, minlength=10)
        assert int(counts[labels == anchor].sum()) == 0
        # uniform over the other classes' images: each near 4000 / count
        expected = 4000 / len(others)
        assert all(abs(int(counts[i]) - expected) < 0.2 * expected for i in others.tolist())


class Recorder:
    def __init__(self):
        self.memory = None
        self.steps = []

    @hookimpl
    def adjust_images(self, step):
        if step.stage.name == "train" and len(self.steps) < 2:
            memory = step.run.modules["crd_memory"]
            self.memory = {k: v.clone() for k, v in memory.state_dict().items()}

    @hookimpl
    def step_end(self, step):
        if step.stage.name == "train" and len(self.steps) < 2:
            out = step.extras["crd"]
            self.steps.append({"before": self.memory, "N": len(step.run.dataset.train.labels),
                               **{k: v.clone() for k, v in out.items()}})


def test_short_run_loss_is_the_direct_computation(isolated):
    recorder = Recorder()
    plugins = Plugins(extra={"recorder": recorder})
    settings = resolve(plugins, ["crd", "recorder"], overrides={"epochs": 1}, assignments=[
        *FAST_SETTINGS, "imbalance_factor=100", "views.classifier=standard", "crd.teacher_epochs=1",
        "crd.negatives=16", "crd.kd_weight=0.5"])
    result = train(plugins, ["crd", "recorder"], settings, progress=False)
    modules = torch.load(result.run_dir / "model.pt", weights_only=False)["modules"]
    assert any(k.startswith("teacher.") for k in modules)
    assert "crd_memory.student" in modules and "model.heads.crd_teacher.weight" in modules
    for record in recorder.steps:
        before, v_s, v_t, idx = record["before"], record["v_s"], record["v_t"], record["idx"]
        z = record["before"]["z"]
        h_s = [[math.exp(float(before["teacher"][j].double() @ v_s[b].double()) / 0.07)
                for j in idx[b].tolist()] for b in range(len(idx))]
        h_t = [[math.exp(float(before["student"][j].double() @ v_t[b].double()) / 0.07)
                for j in idx[b].tolist()] for b in range(len(idx))]
        if float(z[0]) < 0:  # the first step fixes Z
            z = [sum(map(sum, h)) / (len(h) * len(h[0])) * record["N"] for h in (h_s, h_t)]
        else:
            z = z.tolist()
        expected = (direct_nce([[x / z[0] for x in r] for r in h_s], record["N"])
                    + direct_nce([[x / z[1] for x in r] for r in h_t], record["N"]))
        assert float(record["loss"]) == pytest.approx(expected, rel=1e-4)
        assert idx.shape[1] == 17


def test_crd_options_are_checked(make_run):
    with pytest.raises(ConfigError, match="crd.negatives"):
        make_run(["crd"], "crd.negatives=0")
    with pytest.raises(ConfigError, match="crd.negatives_from"):
        make_run(["crd"], "crd.negatives_from=some")
