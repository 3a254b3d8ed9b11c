"""What a cogloat pre-training epoch does at every step: positives, queue, key encoder, checkpoint."""

import torch

from ltcore import Plugins, hookimpl, resolve, train
from ltcore.testing import FAST_SETTINGS
from ltcore.testing import tiny_dataset as digits_lt


class StepRecorder:
    """Records each step's rows and the queue right after cogloat's ``step_end``."""

    def __init__(self):
        self.steps = []
        self.stage_views = None

    @hookimpl
    def setup_run(self, run):
        self.stage_views = run.main_stage.views

    @hookimpl(trylast=True)
    def step_end(self, step):
        queue = step.run.modules["cogloat_queue"]
        self.steps.append(({s: i.clone() for s, i in step.indices.items()},
                           step.labels["sample"].clone(), int(queue.pointer), queue.labels.clone()))


def test_pretraining_steps_draw_global_positives_and_fill_the_queue(isolated):
    recorder = StepRecorder()
    plugins = Plugins(extra={"recorder": recorder})
    selected = ["cogloat", "recorder"]
    settings = resolve(plugins, selected, overrides={"epochs": 1},
                       assignments=[*FAST_SETTINGS, "views.backend=batched",
                                    "cogloat.classifier_epochs=0", "cogloat.queue_size=100"])
    result = train(plugins, selected, settings, progress=False)

    labels = digits_lt(settings.run.imbalance_factor).train.labels
    assert not recorder.stage_views["pos1"].forward and recorder.stage_views["pos1"].source == "pos1"
    assert len(recorder.steps) == -(-len(labels) // 64)
    pointer, checked = 0, 0
    for indices, sample_labels, queue_pointer, queue_labels in recorder.steps:
        batch = indices["sample"]
        assert torch.equal(labels[batch], sample_labels)
        in_batch = set(batch.tolist())
        for j in (1, 2, 3):
            assert torch.equal(labels[indices[f"pos{j}"]], sample_labels)
        for row, anchor in enumerate(batch.tolist()):
            members = (labels == labels[anchor]).nonzero().squeeze(1).tolist()
            if len([m for m in members if m not in in_batch]) >= 3:
                positives = [int(indices[f"pos{j}"][row]) for j in (1, 2, 3)]
                assert not in_batch.intersection(positives)
                checked += 1
        slots = [(pointer + i) % 100 for i in range(len(batch))][-100:]
        assert queue_labels[slots].tolist() == sample_labels.tolist()[-100:]
        pointer = (pointer + len(batch)) % 100
        assert queue_pointer == pointer
    assert checked > len(labels) // 2

    saved = torch.load(result.run_dir / "checkpoint.pt", weights_only=False)["modules"]
    assert int(saved["cogloat_queue.pointer"]) == pointer
    key = saved["cogloat_key_encoder.key.backbone.conv1.weight"]
    query = saved["model.backbone.conv1.weight"]
    assert key.shape == query.shape and not torch.equal(key, query)
