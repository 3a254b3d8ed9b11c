"""The view pipelines of GML's ImageNet-LT / iNaturalist reference code (``--aug
randcls_randclsstack`` of ``main.py`` in bluecdm/Long-tailed-recognition).

Per image, in this order (``S`` = ``views.image_size``; the reference code hard-codes 224):

* ``gml-randcls`` (classifier view, ``augmentation_randncls``): RandomResizedCrop(S, scale
  (0.08, 1)), flip p 0.5, RandomApply(ColorJitter(0.4, 0.4, 0.4, 0), p 1), timm RandAugment
  ``rand-n2-m10-mstd0.5``, ToTensor, Normalize.
* ``gml-randclsstack`` (query and key views, ``augmentation_randnclsstack``): the same crop and
  flip, RandomApply(ColorJitter(0.4, 0.4, 0.4, 0), p 1), RandomGrayscale(p 0.2),
  RandomApply(GaussianBlur(sigma uniform in [0.1, 2]), p 0.5), the same RandAugment, ToTensor,
  Normalize.

RandAugment's hyper-parameters are the reference code's: ``translate_const = int(0.45 S)`` and
the ImageNet mean colour as fill, for every dataset (iNaturalist included). The blur is
MoCo's: PIL's ``ImageFilter.GaussianBlur(radius=sigma)``. Both are per-image (reference) forms
only; runs use them through DataLoader workers, as ``imagenet-randaugment``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ltcore import ViewPipeline

RANDAUGMENT = "rand-n2-m10-mstd0.5"
"""``'rand-n{}-m{}-mstd0.5'.format(args.randaug_n, args.randaug_m)`` with the defaults 2, 10."""
FILL_MEAN = (0.485, 0.456, 0.406)
"""``rgb_mean`` of the reference code: the RandAugment fill, whatever the dataset."""
JITTER = (0.4, 0.4, 0.4, 0.0)
"""ColorJitter(brightness, contrast, saturation, hue) of both views, applied with p 1."""
GRAYSCALE_P = 0.2
BLUR_P = 0.5
BLUR_SIGMA = (0.1, 2.0)
CROP_SCALE = (0.08, 1.0)

STACK = "gml-randclsstack"
CLASSIFIER = "gml-randcls"


class GaussianBlur:
    """MoCo v2's blur: ``sigma`` uniform in ``[low, high]`` (Python's ``random``), then PIL's
    ``ImageFilter.GaussianBlur(radius=sigma)``."""

    def __init__(self, sigma: Sequence[float] = BLUR_SIGMA):
        self.sigma = tuple(sigma)

    def __call__(self, image):
        from PIL import ImageFilter

        sigma = random.uniform(self.sigma[0], self.sigma[1])
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma})"


def randaugment(image_size: int):
    """timm's RandAugment with the reference code's ``ra_params``."""
    from timm.data.auto_augment import rand_augment_transform

    fill = tuple(min(255, round(255 * x)) for x in FILL_MEAN)
    return rand_augment_transform(RANDAUGMENT, {"translate_const": int(image_size * 0.45),
                                                "img_mean": fill})


def build(name: str, image_size: int, mean: Sequence[float], std: Sequence[float]):
    """The per-image form of ``name`` (:data:`STACK` or :data:`CLASSIFIER`)."""
    from torchvision import transforms as T

    steps = [T.RandomResizedCrop(image_size, scale=CROP_SCALE), T.RandomHorizontalFlip(),
             T.RandomApply([T.ColorJitter(*JITTER)], p=1.0)]
    if name == STACK:
        steps += [T.RandomGrayscale(p=GRAYSCALE_P), T.RandomApply([GaussianBlur()], p=BLUR_P)]
    elif name != CLASSIFIER:
        raise ValueError(f"unknown GML view pipeline {name!r}")
    steps += [randaugment(image_size), T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def _factory(name: str):
    def factory(image_size: int, mean: Sequence[float], std: Sequence[float], **options):
        return build(name, image_size, mean, std)
    return factory


_CROP = "RandomResizedCrop(S, scale (0.08, 1), ratio (3/4, 4/3)) + flip p 0.5 + "
_JITTER = "RandomApply(ColorJitter(0.4, 0.4, 0.4, 0), p 1) + "
_TAIL = ("timm RandAugment 'rand-n2-m10-mstd0.5' (translate up to 0.45 S, ImageNet-mean fill) + "
         "ToTensor + Normalize(mean, std).")

PIPELINES = (
    ViewPipeline(name=STACK, description=_CROP + _JITTER + "RandomGrayscale(p 0.2) + RandomApply("
                 "GaussianBlur(sigma U[0.1, 2], PIL), p 0.5) + " + _TAIL,
                 papers=("GML (ImageNet-LT / iNaturalist query and key views, reference code)",),
                 batched=False, reference_factory=_factory(STACK)),
    ViewPipeline(name=CLASSIFIER, description=_CROP + _JITTER + _TAIL,
                 papers=("GML (ImageNet-LT / iNaturalist classifier view, reference code)",),
                 batched=False, reference_factory=_factory(CLASSIFIER)),
)
