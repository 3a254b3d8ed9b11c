"""GML's ImageNet-LT preset (teacher stage, then the student with class-wise queues) on a small
tree in ImageNet-LT's layout."""

from ltcore.testing import make_benchmark_tree, train_on_tree


def test_gml_imagenet_preset_on_an_imagenet_lt_tree(ltrun, tmp_path):
    tree = make_benchmark_tree(tmp_path / "imagenet-lt")
    train_on_tree(ltrun, tree, "--plugin", "gml", "--preset", "imagenet-lt",
                  "--set", "gml.teacher_backbone=resnet8", "--set", "gml.teacher_epochs=1",
                  "--set", "gml.queue_size=64")
