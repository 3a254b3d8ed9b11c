"""The file benchmarks end to end on small trees in their standard layouts (split lists, JPEGs
of varied non-square sizes, some smaller than the 224 px crop): training, evaluation through
the dataset's own evaluation view, and ``ltrun evaluate`` on the saved model."""

import pytest
import torch

from ltcore.testing import make_benchmark_tree, train_on_tree


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    return {name: make_benchmark_tree(root / name, name)
            for name in ("imagenet-lt", "places-lt", "inaturalist2018")}


@pytest.mark.parametrize("benchmark", ["imagenet-lt", "places-lt", "inaturalist2018"])
def test_ce_with_defaults_trains_and_evaluates_on_every_benchmark(ltrun, trees, benchmark):
    train_on_tree(ltrun, trees[benchmark], "--plugin", "ce", "--dataset", benchmark)


def test_crt_imagenet_preset_and_the_batched_file_views(ltrun, trees):
    """cRT's ImageNet-LT preset, with the views decoded and made in batches (the GPU path)."""
    train_on_tree(ltrun, trees["imagenet-lt"], "--plugin", "crt", "--preset", "imagenet-lt",
                  "--set", "crt.epochs=1", "--set", "views.backend=batched")


def test_a_benchmark_declares_its_views_and_auto_resolves_to_them(trees):
    from ltcore.config import resolve
    from ltcore.engine.runs import prepare
    from ltcore.plugins import Plugins

    plugins = Plugins()
    digits = prepare(plugins, ["ce"], resolve(plugins, ["ce"]))
    assert (digits.dataset.eval_view, digits.config.views.classifier,
            digits.config.views.contrastive) == ("eval", "standard", "standard")  # digits' own
    imagenet = prepare(plugins, ["ce"], resolve(plugins, ["ce"], overrides={
        "dataset": "imagenet-lt", "data_dir": str(trees["imagenet-lt"]), "views.image_size": 64,
        "model.backbone": "resnet8"}))
    assert imagenet.dataset.eval_view == "imagenet-eval" and imagenet.dataset.image_size == 64
    assert (imagenet.config.views.classifier, imagenet.config.views.contrastive) == (
        "imagenet-standard", "imagenet-simaugment")


def test_the_view_size_of_an_in_memory_dataset_cannot_change(ltrun):
    result = ltrun("--set", "views.image_size=64", "--epochs", "1", "--no-progress")
    assert result.exit_code == 2
    assert "only datasets of image files can change the view size" in result.stderr


def test_workers_default_to_the_usable_cores():
    import os

    from ltcore.config import ViewsConfig

    assert ViewsConfig().loader_workers == len(os.sched_getaffinity(0))
    assert ViewsConfig(workers=0).loader_workers == 0


def test_files_decode_in_workers_and_on_the_device_alike(trees):
    """What the batched file path decodes equals PIL's decoding of the same JPEG."""
    import numpy as np

    from ltcore.data import load_image
    from ltcore.views.files import EncodedImages, decode

    paths = sorted(str(p) for p in (trees["places-lt"] / "train").rglob("*.jpg"))[:4]
    encoded = [EncodedImages(paths, decode_jpegs=False)[i] for i in range(4)]
    assert all(item.ndim == 1 for item in encoded)
    decoded = decode(encoded, paths, torch.device("cpu"))
    in_workers = [EncodedImages(paths, decode_jpegs=True)[i] for i in range(4)]
    for path, image, other in zip(paths, decoded, in_workers):
        pil = torch.from_numpy(np.asarray(load_image(path)).copy()).permute(2, 0, 1)
        assert image.shape == pil.shape and torch.equal(image, other)
        assert float((image.float() - pil.float()).abs().mean()) < 1.0


def test_split_list_benchmarks_name_their_classes(tmp_path):
    from ltcore.data import split_list_class_names

    assert split_list_class_names("imagenet-lt", tmp_path, 1000)[:3] == [
        "tench", "goldfish", "great white shark"]
    assert split_list_class_names("imagenet-lt", tmp_path, 4) == ["0", "1", "2", "3"]
    (tmp_path / "categories.json").write_text(
        '[{"id": 1, "name": "Aix sponsa"}, {"id": 0, "name": "Plantae"}]')
    assert split_list_class_names("inaturalist2018", tmp_path, 3) == ["Plantae", "Aix sponsa", "2"]
    (tmp_path / "categories_places365.txt").write_text(
        "/a/airfield 0\n/a/apartment_building/outdoor 1\n")
    assert split_list_class_names("places-lt", tmp_path, 2) == ["airfield",
                                                                "apartment_building outdoor"]


def test_inaturalist_is_normalised_with_its_own_channel_statistics(trees):
    """The BCL and GML reference code normalise iNaturalist 2018 with its own mean and std."""
    from ltcore.data import IMAGENET_STATS, split_list_dataset

    inat = split_list_dataset("inaturalist2018", str(trees["inaturalist2018"]))
    assert (inat.mean, inat.std) == ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192))
    imagenet = split_list_dataset("imagenet-lt", str(trees["imagenet-lt"]))
    assert (imagenet.mean, imagenet.std) == IMAGENET_STATS
