"""CoGloAT's ImageNet-LT preset, alone and with ProCo (whose coreset embedding runs on augmented
views of the image files), on a small tree in ImageNet-LT's layout."""

import pytest

from ltcore.testing import make_benchmark_tree, train_on_tree


@pytest.mark.parametrize("plugins", [["cogloat"], ["cogloat", "proco"]], ids="+".join)
def test_cogloat_imagenet_preset_on_an_imagenet_lt_tree(ltrun, tmp_path, plugins):
    tree = make_benchmark_tree(tmp_path / "imagenet-lt")
    selected = [arg for name in plugins for arg in ("--plugin", name)]
    train_on_tree(ltrun, tree, *selected, "--preset", "imagenet-lt",
                  "--set", "cogloat.classifier_epochs=1", "--set", "cogloat.queue_size=32",
                  "--set", "eval.every=1")
