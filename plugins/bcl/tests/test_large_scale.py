"""BCL's large-scale presets train, evaluate and report on small trees in the layouts of
ImageNet-LT, iNaturalist 2018 and Places-LT (ltcore.testing.make_benchmark_tree)."""

import pytest

from ltcore.testing import make_benchmark_tree, train_on_tree

CASES = {
    "imagenet-lt": ["--preset", "imagenet-lt-resnet50"],
    "inaturalist2018": ["--preset", "inaturalist2018"],
    "places-lt": ["--preset", "imagenet-lt-resnet50", "--dataset", "places-lt"],
}


@pytest.mark.parametrize("benchmark", CASES)
def test_bcl_large_scale_preset_trains_and_evaluates(ltrun, tmp_path, benchmark):
    tree = make_benchmark_tree(tmp_path / benchmark, benchmark)
    train_on_tree(ltrun, tree, "--plugin", "bcl", *CASES[benchmark])


def test_the_large_scale_presets_use_the_reference_temperature():
    from ltcore import Plugins, resolve

    plugins = Plugins()
    for preset in ("imagenet-lt-resnet50", "imagenet-lt-resnext50", "inaturalist2018"):
        assert resolve(plugins, ["bcl"], presets=[preset]).plugins["bcl"].temperature == 0.07
    assert resolve(plugins, ["bcl"], presets=["cifar100-lt"]).plugins["bcl"].temperature == 0.1
