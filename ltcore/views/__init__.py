"""View pipelines: the augmentations that turn one training image into the views a method sees.

Each pipeline exists in two forms that do the same thing:

* **reference** (:func:`build_reference`): torchvision v1 transforms on one PIL image, run in
  DataLoader workers, returning a normalised float tensor ``[C, S, S]``. This is what the
  papers' code runs and what the batched form is checked against.
* **batched** (:func:`build_batched`): pure torch ops on a uint8 batch ``[B, C, H, W]`` on any
  device, with a ``torch.Generator`` on that device, returning normalised float32
  ``[B, C, S, S]``. Every random choice (crop box, flip, AutoAugment sub-policy, op
  probabilities and signs, RandAugment ops, jitter order and factors, cutout centre) is drawn
  per sample; shapes are static and nothing reads GPU values on the host, so the step can be
  compiled or captured in a CUDA graph. Pixel arithmetic follows torchvision's uint8 tensor ops
  (``torchvision.transforms.functional`` on tensors) bit for bit on CPU; the reference path runs
  PIL's versions of the same ops, which differ from them by rounding (see ``tests/views``).

Why not kornia or torchvision.transforms.v2 for the batched path: kornia's AutoAugment draws one
sub-policy for the whole batch, and torchvision v2 transforms draw their parameters once per
call, so a batch would share one crop, one flip and one policy. Per-sample draws are the
augmentation the papers train with (one draw per image in a DataLoader worker); sharing them
across a batch changes the training distribution.

Choices the papers leave open, with the reading taken here:

* Cutout (BCL / RCL classifier view) zeroes the hole in ``[0, 1]`` pixel units *before*
  ``Normalize``, as the BCL / PaCo reference code orders ``ToTensor, Cutout, Normalize``; the
  hole is therefore black, i.e. ``-mean / std`` after normalisation. DeVries & Taylor's CIFAR
  code cuts after normalisation (a mean-coloured hole); ``cutout_after_normalize=True`` selects
  that.
* AutoAugment is torchvision's ``AutoAugmentPolicy.CIFAR10`` / ``IMAGENET`` (nearest
  interpolation, zero fill). The BCL code uses DeVries' ``CIFAR10Policy`` port, whose magnitude
  ranges and fill colour differ slightly.
* ``imagenet-randaugment`` is timm's ``rand_augment_transform("rand-n2-m10-mstd0.5")`` with the
  reference code's hyper-parameters, as BCL's ImageNet code trains (it adds a
  ``ColorJitter(0.4, 0.4, 0.4, 0)`` before it, left out here). Its magnitude 10 is the top of
  timm's 0..10 scale; torchvision's ``RandAugment(2, 10)`` reads 10 on a 0..30 scale, about a
  third of the strength. timm is what the field's code imports for it, so the per-image form
  calls timm itself; there is no batched form (CIFAR's ``randaugment`` keeps torchvision's).
* Single-channel images: saturation, hue and grayscale are no-ops (as PIL and torchvision do
  for mode ``L``); brightness, contrast and the AutoAugment ops apply normally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs


@attrs.frozen
class ViewPipeline:
    """One named view pipeline and how to build its two forms.

    Built-in pipelines leave the factories unset and are built by name with
    :func:`build_reference` / :func:`build_batched`. A plugin can register its own pipeline by
    giving ``reference_factory`` (and ``batched_factory`` if ``batched``), each called as
    ``factory(image_size, mean, std, **options)``.
    """

    name: str = attrs.field(metadata={"doc": "public id, as passed to build_reference / build_batched"})
    description: str = attrs.field(metadata={"doc": "the exact transforms and parameters, in order"})
    papers: tuple[str, ...] = attrs.field(metadata={"doc": "methods whose recipes use it"})
    batched: bool = attrs.field(metadata={"doc": "whether a batched form exists"})
    reference_factory: Callable | None = attrs.field(
        default=None, metadata={"doc": "builds the per-image form; None: the built-in pipeline of this name"})
    batched_factory: Callable | None = attrs.field(
        default=None, metadata={"doc": "builds the batched form; None: the built-in pipeline of this name"})

    def make_reference(self, image_size: int, mean: Sequence[float], std: Sequence[float], **options) -> Callable:
        """The per-image form (``PIL.Image -> Tensor [C, S, S]``); see :func:`build_reference`."""
        if self.reference_factory is not None:
            return self.reference_factory(image_size, mean, std, **options)
        return build_reference(self.name, image_size, mean, std, **options)

    def make_batched(self, image_size: int, mean: Sequence[float], std: Sequence[float], **options) -> Callable:
        """The batched form (``(uint8 [B, C, H, W], Generator) -> [B, C, S, S]``); see :func:`build_batched`."""
        if not self.batched:
            raise ValueError(f"view pipeline {self.name!r} has no batched form; use its reference form")
        if self.batched_factory is not None:
            return self.batched_factory(image_size, mean, std, **options)
        return build_batched(self.name, image_size, mean, std, **options)


_NORMALISE = "ToTensor + Normalize(mean, std)."
_SIMAUGMENT = ("flip p 0.5 + RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p 0.8) (per-sample random op order) + "
               "RandomGrayscale(p 0.2) + ")

VIEW_PIPELINES = (
    ViewPipeline(
        name="standard",
        description="RandomCrop(S, padding S // 8, zero fill) + horizontal flip p 0.5 + " + _NORMALISE,
        papers=("LDAM-DRW", "ICCL", "CE / LA / Balanced Softmax baselines"),
        batched=True,
    ),
    ViewPipeline(
        name="autoaugment-cutout",
        description=(
            "RandomCrop(S, padding S // 8) + flip p 0.5 + AutoAugment(CIFAR10 policy, nearest, zero fill) + "
            "ToTensor + Cutout(one S // 2 square, centre uniform over the pixels, clipped, zeroed before "
            "Normalize) + Normalize(mean, std)."
        ),
        papers=("BCL (v1)", "RCL (v1)", "GML (CIFAR, AutoAugment views)"),
        batched=True,
    ),
    ViewPipeline(
        name="simaugment",
        description="RandomResizedCrop(S, scale (0.2, 1), ratio (3/4, 4/3), bilinear antialias) + " + _SIMAUGMENT
        + _NORMALISE,
        papers=("BCL (v2, v3)", "RCL (v2, v3)", "SupCon"),
        batched=True,
    ),
    ViewPipeline(
        name="randaugment",
        description="RandomCrop(S, padding S // 8) + flip p 0.5 + RandAugment(num_ops 2, magnitude 10 of 31, "
        "nearest, zero fill) + " + _NORMALISE,
        papers=(),
        batched=True,
    ),
    ViewPipeline(
        name="imagenet-standard",
        description="RandomResizedCrop(S, scale (0.08, 1), ratio (3/4, 4/3)) + flip p 0.5 + " + _NORMALISE,
        papers=("ICCL (iNaturalist)", "LDAM-DRW / cRT baselines"),
        batched=True,
    ),
    ViewPipeline(
        name="imagenet-simaugment",
        description="RandomResizedCrop(S, scale (0.08, 1), ratio (3/4, 4/3)) + " + _SIMAUGMENT + _NORMALISE,
        papers=("BCL (v2, v3)", "RCL (v2, v3)", "GML (contrastive views)"),
        batched=True,
    ),
    ViewPipeline(
        name="imagenet-randaugment",
        description="RandomResizedCrop(S, scale (0.08, 1), ratio (3/4, 4/3)) + flip p 0.5 + timm RandAugment "
        "'rand-n2-m10-mstd0.5' (2 ops, magnitude 10 of 10 with noise std 0.5, each op p 0.5, translate up "
        "to 0.45 S, mean-colour fill) + " + _NORMALISE,
        papers=("BCL (ImageNet-LT, iNaturalist)", "GML (classifier view)"),
        batched=False,
    ),
    ViewPipeline(
        name="imagenet-autoaugment",
        description="RandomResizedCrop(S, scale (0.08, 1), ratio (3/4, 4/3)) + flip p 0.5 + AutoAugment(IMAGENET "
        "policy, nearest, zero fill) + " + _NORMALISE,
        papers=(),
        batched=True,
    ),
    ViewPipeline(
        name="eval",
        description="Evaluation of images stored at S x S (digits, CIFAR, small ImageFolder trees): " + _NORMALISE,
        papers=("all (CIFAR evaluation)",),
        batched=True,
    ),
    ViewPipeline(
        name="imagenet-eval",
        description="Evaluation: Resize(shorter side round(S * 256 / 224), bilinear antialias) + CenterCrop(S) + "
        + _NORMALISE,
        papers=("all (ImageNet-LT / iNaturalist evaluation)",),
        batched=True,
    ),
)
"""Every view pipeline, by public id. ``S`` is ``image_size``. The reference forms take PIL images of
any size (a CIFAR-style crop pads an image smaller than the crop). The batched forms take a
same-size uint8 batch; those that start with a random-resized crop or a resize (the ImageNet
ones, ``simaugment``) also make views of decoded files of any size
(``BatchedViewPipeline.from_images``). Each dataset names its evaluation pipeline
(``Dataset.eval_view``): ``eval`` for images stored at ``S``, ``imagenet-eval`` for files."""

_BY_NAME = {pipeline.name: pipeline for pipeline in VIEW_PIPELINES}


def view_pipeline(name: str) -> ViewPipeline:
    """The :class:`ViewPipeline` called ``name``; ``ValueError`` naming the known ids otherwise."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown view pipeline {name!r}; known: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def build_reference(
    name: str, image_size: int, mean: Sequence[float], std: Sequence[float], *, cutout_after_normalize: bool = False
) -> Callable:
    """Per-image pipeline: ``PIL.Image -> Tensor [C, image_size, image_size]`` (normalised float32).

    ``mean`` / ``std``: per-channel floats in [0, 1] units, one per image channel (1 or 3).
    ``cutout_after_normalize``: only for ``autoaugment-cutout``; default False (black hole, BCL code).
    """
    from ltcore.views import reference

    pipeline = view_pipeline(name)
    _check_normalisation(mean, std)
    return reference.build(pipeline.name, image_size, mean, std, cutout_after_normalize)


def build_batched(
    name: str, image_size: int, mean: Sequence[float], std: Sequence[float], *, cutout_after_normalize: bool = False
) -> Callable:
    """Batched pipeline: ``(uint8 Tensor [B, C, H, W], torch.Generator) -> float32 [B, C, image_size, image_size]``.

    The generator must live on the images' device (``torch.Generator(device=images.device)``);
    results are a deterministic function of the images and the generator state.
    Same arguments as :func:`build_reference`. The returned ``BatchedViewPipeline`` also offers
    ``sample(images.shape, generator) -> params`` and ``apply(images, params)``; compile
    ``apply`` (``torch.compile(pipeline.apply, fullgraph=True)``) and keep ``sample`` eager,
    since TorchDynamo does not trace ``torch.Generator`` arguments.
    """
    from ltcore.views import batched

    pipeline = view_pipeline(name)
    if not pipeline.batched:
        raise ValueError(f"view pipeline {name!r} has no batched form; use build_reference")
    _check_normalisation(mean, std)
    return batched.build(pipeline.name, image_size, mean, std, cutout_after_normalize)


def _check_normalisation(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise ValueError(f"mean and std need one value per channel (1 or 3), got {len(mean)} and {len(std)}")
    if any(value <= 0 for value in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")


def seed_image_randomness(seed: int) -> None:
    """Seed the random generators a per-image (reference) transform draws from; see
    :func:`ltcore.views.reference.seed_image_randomness`."""
    from ltcore.views import reference

    reference.seed_image_randomness(seed)


__all__ = ["VIEW_PIPELINES", "ViewPipeline", "build_batched", "build_reference",
           "seed_image_randomness", "view_pipeline"]
