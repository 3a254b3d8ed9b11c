"""ICCL's ImageNet-LT preset (representation stage, then classifier rebalancing) on a small tree
in ImageNet-LT's layout."""

from ltcore.testing import make_benchmark_tree, train_on_tree


def test_iccl_imagenet_preset_on_an_imagenet_lt_tree(ltrun, tmp_path):
    tree = make_benchmark_tree(tmp_path / "imagenet-lt")
    train_on_tree(ltrun, tree, "--plugin", "iccl", "--preset", "imagenet-lt",
                  "--set", "iccl.warmup_epochs=0", "--set", "iccl.classifier_epochs=1")
