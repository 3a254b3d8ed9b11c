"""Views of images of any size: the batched pipelines on decoded files, and the per-image ones on
images smaller than their crop."""

import pytest
import torch
import torchvision.transforms.functional as TF

from ltcore.views import build_batched, build_reference, view_pipeline
from ltcore.views.batched import RandomResizedCrop


def images_of_many_sizes(helpers):
    base = helpers.make_test_images(6, size=96, seed=70)
    return [base[0, :, :40, :71], base[1, :, :96, :50], base[2, :, :33, :33],
            base[3, :, :80, :90], base[4, :, :20, :64], base[5]]


def test_crop_boxes_for_per_image_sizes_are_those_of_same_size_batches():
    crop = RandomResizedCrop(32)
    same = crop.sample(64, 40, 48, torch.Generator().manual_seed(71))
    sizes = crop.sample_sizes(torch.full((64,), 40), torch.full((64,), 48),
                              torch.Generator().manual_seed(71))
    assert all(torch.equal(a, b) for a, b in zip(same, sizes))


def test_crop_boxes_lie_inside_each_image_including_the_fallback():
    crop = RandomResizedCrop(32, scale=(0.99, 1.0), ratio=(3.0, 4.0))  # rarely fits: fallback
    heights = torch.tensor([40, 96, 33, 80, 20, 96] * 20)
    widths = torch.tensor([71, 50, 33, 90, 64, 96] * 20)
    top, left, height, width = crop.sample_sizes(heights, widths, torch.Generator().manual_seed(72))
    assert bool((top >= 0).all() and (left >= 0).all() and (height >= 1).all())
    assert bool((top + height <= heights).all() and (left + width <= widths).all())


@pytest.mark.parametrize("name", ["imagenet-standard", "imagenet-simaugment", "imagenet-autoaugment",
                                  "simaugment", "imagenet-eval"])
def test_batched_views_of_images_of_many_sizes(name, helpers):
    images = images_of_many_sizes(helpers)
    pipeline = build_batched(name, 32, helpers.mean, helpers.std)
    assert pipeline.any_size
    views = pipeline.from_images(images, torch.Generator().manual_seed(73))
    assert views.shape == (6, 3, 32, 32) and bool(torch.isfinite(views).all())
    again = pipeline.from_images(images, torch.Generator().manual_seed(73))
    assert torch.equal(views, again)


def test_evaluation_of_images_of_many_sizes_is_torchvisions_resize_and_centre_crop(helpers):
    images = images_of_many_sizes(helpers)
    views = build_batched("imagenet-eval", 32, helpers.mean, helpers.std).from_images(
        images, torch.Generator())
    for view, image in zip(views, images):
        expected = TF.center_crop(TF.resize(image, 37, antialias=True), 32)
        assert torch.equal(view, TF.normalize(expected.float() / 255, helpers.mean, helpers.std))


def test_pipelines_that_need_one_size_refuse_files(helpers):
    pipeline = build_batched("standard", 32, helpers.mean, helpers.std)
    assert not pipeline.any_size
    with pytest.raises(ValueError, match="needs images of one size"):
        pipeline.from_images(images_of_many_sizes(helpers), torch.Generator())


@pytest.mark.parametrize("name", ["standard", "autoaugment-cutout", "randaugment"])
def test_cifar_crops_pad_an_image_smaller_than_the_crop(name, helpers):
    small = helpers.to_pil(helpers.make_test_images(1, size=20, seed=74)[0])
    assert build_reference(name, 32, helpers.mean, helpers.std)(small).shape == (3, 32, 32)


def test_imagenet_randaugment_is_timms_reference_policy(helpers):
    from timm.data.auto_augment import RandAugment

    transform = build_reference("imagenet-randaugment", 224, helpers.mean, helpers.std)
    (augment,) = [t for t in transform.transforms if isinstance(t, RandAugment)]
    assert augment.num_layers == 2 and len(augment.ops) == 15
    for op in augment.ops:
        assert op.magnitude == 10 and op.magnitude_std == 0.5 and op.prob == 0.5
    translate = [op for op in augment.ops if op.name == "TranslateXRel"][0]
    assert abs(translate.level_fn(10, translate.hparams)[0]) == pytest.approx(0.45)  # of the side
    assert translate.hparams["img_mean"] == tuple(round(255 * m) for m in helpers.mean)
    assert not view_pipeline("imagenet-randaugment").batched
    image = helpers.to_pil(helpers.make_test_images(1, size=256, seed=75)[0])
    assert transform(image).shape == (3, 224, 224)
