"""``views.contrastive_second``: the second contrastive view through its own pipeline."""

import pytest
import torch

from ltcore import ConfigError, ViewPipeline, hookimpl, resolve
from ltcore.testing import assemble_run, plugins_holding, training_step

MARK = 7.0


def marked(size, mean, std, **options):
    """A pipeline whose every view is the constant MARK: where it is used cannot be mistaken."""
    return lambda image: torch.full((len(mean), size, size), MARK)


class MarkerView:
    @hookimpl
    def register_views(self, register):
        register("marker", ViewPipeline(name="marker", description="constant 7", papers=(),
                                        batched=False, reference_factory=marked))


def supcon_step(*assignments):
    plugins = plugins_holding("supcon", extra={"marker": MarkerView()})
    run = assemble_run(["supcon"], "views.backend=reference", "views.workers=0", *assignments,
                       plugins=plugins)
    return run, training_step(run, batch_size=8)


def is_marked(images):
    return bool((images == MARK).all())


def test_the_second_contrastive_view_goes_through_its_own_pipeline(isolated):
    run, step = supcon_step("views.contrastive=standard", "views.contrastive_second=marker")
    assert {r: v.pipeline for r, v in run.main_stage.views.items()} == {
        "cls": "standard", "con0": "standard", "con1": "marker"}
    assert is_marked(step.images["con1"]) and not is_marked(step.images["con0"])
    assert step.images["con1"].shape == step.images["con0"].shape


def test_without_it_both_views_take_views_contrastive(isolated):
    run, step = supcon_step("views.contrastive=marker")
    assert [run.main_stage.views[r].pipeline for r in ("con0", "con1")] == ["marker", "marker"]
    assert is_marked(step.images["con0"]) and is_marked(step.images["con1"])
    assert not is_marked(step.images["cls"])
    run, _ = supcon_step("views.contrastive=marker", "views.contrastive_second=auto")
    assert [run.main_stage.views[r].pipeline for r in ("con0", "con1")] == [
        "marker", "standard"]  # auto: the dataset's contrastive view (digits: standard)


def test_an_unknown_second_pipeline_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="views.contrastive_second"):
        resolve(plugins_holding("supcon"), ["supcon"],
                assignments=["views.contrastive_second=nonesuch"])
