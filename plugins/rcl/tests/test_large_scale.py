"""BCL + RCL with BCL's ImageNet-LT preset on a small tree in ImageNet-LT's layout: RCL's
per-class validation measurement goes through the dataset's evaluation view."""

from ltcore.testing import make_benchmark_tree, train_on_tree


def test_bcl_with_rcl_on_an_imagenet_lt_tree(ltrun, tmp_path):
    tree = make_benchmark_tree(tmp_path / "imagenet-lt")
    train_on_tree(ltrun, tree, "--plugin", "bcl", "--plugin", "rcl",
                  "--preset", "imagenet-lt-resnet50")
