"""Per-sample AutoAugment and RandAugment on batches, following torchvision's definitions.

An *augment op* is one of :data:`OP_NAMES` with a signed magnitude, exactly the arguments of
torchvision's ``autoaugment._apply_op(img, op_name, magnitude)``: Brightness / Color / Contrast /
Sharpness use factor ``1 + m``, Posterize keeps ``int(m)`` bits, Solarize inverts values
``>= m``, TranslateX/Y shift by ``int(m)`` pixels, Rotate turns by ``m`` degrees, ShearX/Y shear
by ``m`` (``tan`` of the shear angle). :func:`apply_augment_ops` applies one op per sample; each
candidate op is computed for the whole batch and picked per sample with ``torch.where``, the
geometric ones (shear, translate, rotate) through a single per-sample affine warp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ltcore.views import ops

OP_NAMES = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
    "Invert",
)
"""Global op vocabulary; op indices in this module index this tuple."""

OP_INDEX = {name: index for index, name in enumerate(OP_NAMES)}
_GEOMETRIC_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_BLEND_OPS = ("Brightness", "Color", "Contrast", "Sharpness")

RANDAUGMENT_OPS = OP_NAMES[:14]
"""torchvision ``RandAugment``'s op list, in its order (all ops but Invert)."""

# torchvision AutoAugmentPolicy.CIFAR10 / IMAGENET: ((op, probability, magnitude bin), (...)).
CIFAR10_POLICY = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)

IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

AUTOAUGMENT_POLICIES = {"cifar10": CIFAR10_POLICY, "imagenet": IMAGENET_POLICY}

_SIGNED_OPS = frozenset(_GEOMETRIC_OPS + _BLEND_OPS)


def magnitude_bins(op_name: str, num_bins: int, height: int, width: int) -> Tensor:
    """The magnitude table of torchvision's ``_augmentation_space`` for one op (float32 ``[num_bins]``).

    Shear 0..0.3, Translate 0..150/331 of the side, Rotate 0..30 degrees, Brightness / Color /
    Contrast / Sharpness 0..0.9, Posterize ``8 - round(i / ((n - 1) / 4))`` bits, Solarize
    255..0; the magnitude-free ops give zeros.
    """
    linear = {
        "ShearX": 0.3,
        "ShearY": 0.3,
        "TranslateX": 150.0 / 331.0 * width,
        "TranslateY": 150.0 / 331.0 * height,
        "Rotate": 30.0,
        "Brightness": 0.9,
        "Color": 0.9,
        "Contrast": 0.9,
        "Sharpness": 0.9,
    }
    if op_name in linear:
        return torch.linspace(0.0, linear[op_name], num_bins)
    if op_name == "Posterize":
        return (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int()).to(torch.float32)
    if op_name == "Solarize":
        return torch.linspace(255.0, 0.0, num_bins)
    if op_name in OP_INDEX:
        return torch.zeros(num_bins)
    raise ValueError(f"unknown augment op {op_name!r}; known: {', '.join(OP_NAMES)}")


def is_signed(op_name: str) -> bool:
    """Whether torchvision negates the op's magnitude with probability 1/2."""
    return op_name in _SIGNED_OPS


def _geometric_matrix(op_index: Tensor, magnitude: Tensor, height: int, width: int) -> Tensor:
    """Per-sample inverse affine matrix ``[B, 6]`` of the geometric op each sample carries
    (identity for the others), with the parameters ``_apply_op`` passes to ``F.affine`` / ``F.rotate``."""
    magnitude = magnitude.to(torch.float64)
    zero = torch.zeros_like(magnitude)

    def where_op(name: str, value: Tensor) -> Tensor:
        return torch.where(op_index == OP_INDEX[name], value, zero)

    is_shear = (op_index == OP_INDEX["ShearX"]) | (op_index == OP_INDEX["ShearY"])
    # Shears pivot on the top-left corner (center=[0, 0]); the tensor path measures it from the centre.
    center_x = torch.where(is_shear, zero - 0.5 * width, zero)
    center_y = torch.where(is_shear, zero - 0.5 * height, zero)
    shear_degrees = torch.atan(magnitude) * ops.DEGREES_PER_RADIAN
    return ops.inverse_affine_matrix(
        center_x,
        center_y,
        where_op("Rotate", -magnitude),
        where_op("TranslateX", magnitude.trunc()),
        where_op("TranslateY", magnitude.trunc()),
        where_op("ShearX", shear_degrees),
        where_op("ShearY", shear_degrees),
    )


def apply_augment_ops(
    pixels: Tensor, op_index: Tensor, magnitude: Tensor, candidates: Sequence[str] = OP_NAMES
) -> Tensor:
    """Apply op ``OP_NAMES[op_index[b]]`` with signed ``magnitude[b]`` to each sample ``b``.

    Equals torchvision ``_apply_op(img_b, name_b, magnitude_b, NEAREST, fill=None)`` per sample.
    pixels ``[B, C, H, W]``; op_index ``[B]`` long; magnitude ``[B]`` float. ``candidates`` is the
    static set of ops that may occur (only those are computed); other indices act as Identity.
    """
    _, channels, height, width = pixels.shape
    candidates = frozenset(candidates)
    out = pixels

    def chosen(name: str) -> Tensor:
        return (op_index == OP_INDEX[name]).view(-1, 1, 1, 1)

    geometric = [name for name in _GEOMETRIC_OPS if name in candidates]
    if geometric:
        warped = ops.warp_affine_nearest(pixels, _geometric_matrix(op_index, magnitude, height, width))
        is_geometric = torch.zeros_like(op_index, dtype=torch.bool)
        for name in geometric:
            is_geometric = is_geometric | (op_index == OP_INDEX[name])
        out = torch.where(is_geometric.view(-1, 1, 1, 1), warped, out)

    # Brightness, Color, Contrast and Sharpness blend with a degenerate image: one blend for all.
    blend_ops = [name for name in _BLEND_OPS if name in candidates]
    if channels == 1 and "Color" in blend_ops:
        blend_ops.remove("Color")  # saturation leaves single-channel images unchanged
    if width <= 2 or height <= 2:
        blend_ops = [name for name in blend_ops if name != "Sharpness"]
    if blend_ops:
        degenerate = torch.zeros_like(pixels)
        if "Color" in blend_ops:
            degenerate = torch.where(chosen("Color"), ops.rgb_to_grayscale(pixels), degenerate)
        if "Contrast" in blend_ops:
            degenerate = torch.where(chosen("Contrast"), ops.grayscale_mean(pixels), degenerate)
        if "Sharpness" in blend_ops:
            degenerate = torch.where(chosen("Sharpness"), ops.sharpness_degenerate(pixels), degenerate)
        blended = ops.blend(pixels, degenerate, 1.0 + magnitude.to(torch.float64))
        is_blend = torch.zeros_like(op_index, dtype=torch.bool)
        for name in blend_ops:
            is_blend = is_blend | (op_index == OP_INDEX[name])
        out = torch.where(is_blend.view(-1, 1, 1, 1), blended, out)

    if "Posterize" in candidates:
        out = torch.where(chosen("Posterize"), ops.posterize(pixels, magnitude.trunc()), out)
    if "Solarize" in candidates:
        out = torch.where(chosen("Solarize"), ops.solarize(pixels, magnitude), out)
    if "AutoContrast" in candidates:
        out = torch.where(chosen("AutoContrast"), ops.autocontrast(pixels), out)
    if "Equalize" in candidates:
        out = torch.where(chosen("Equalize"), ops.equalize(pixels), out)
    if "Invert" in candidates:
        out = torch.where(chosen("Invert"), ops.invert(pixels), out)
    return out


class AutoAugmentParams(NamedTuple):
    """Per-sample AutoAugment draws. ``policy [B]`` sub-policy index; ``uniform [B, 2]`` probability
    draws (op ``s`` applies when ``uniform[:, s] <= p_s``); ``negate [B, 2]`` sign flips; resolved
    ``op_index [B, 2]`` (Identity where skipped) and signed ``magnitude [B, 2]`` float64."""

    policy: Tensor
    uniform: Tensor
    negate: Tensor
    op_index: Tensor
    magnitude: Tensor


class AutoAugment(torch.nn.Module):
    """Per-sample torchvision ``AutoAugment`` (NEAREST, zero fill) for ``image_size`` x ``image_size`` images.

    Each sample draws its own sub-policy uniformly, applies each of its two ops with the op's
    probability, and negates a signed magnitude with probability 1/2 (torchvision's
    ``signs[i] == 0``). ``policy``: ``"cifar10"`` or ``"imagenet"``. The policy tables are
    buffers, so ``.to(device)`` moves them; :meth:`sample` moves them to the generator's device.
    """

    def __init__(self, policy: str, image_size: int) -> None:
        super().__init__()
        if policy not in AUTOAUGMENT_POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; known: {sorted(AUTOAUGMENT_POLICIES)}")
        sub_policies = AUTOAUGMENT_POLICIES[policy]
        self.num_sub_policies = len(sub_policies)
        self.candidates = tuple(sorted({name for pair in sub_policies for name, _, _ in pair}))
        op_index, probability, magnitude, signed = [], [], [], []
        for pair in sub_policies:
            op_index.append([OP_INDEX[name] for name, _, _ in pair])
            probability.append([p for _, p, _ in pair])
            magnitude.append([
                0.0 if bin_index is None else float(magnitude_bins(name, 10, image_size, image_size)[bin_index])
                for name, _, bin_index in pair
            ])
            signed.append([is_signed(name) for name, _, _ in pair])
        self.register_buffer("op_table", torch.tensor(op_index, dtype=torch.int64), persistent=False)
        self.register_buffer("probability_table", torch.tensor(probability, dtype=torch.float32), persistent=False)
        self.register_buffer("magnitude_table", torch.tensor(magnitude, dtype=torch.float64), persistent=False)
        self.register_buffer("signed_table", torch.tensor(signed, dtype=torch.bool), persistent=False)

    def sample(self, batch: int, generator: torch.Generator) -> AutoAugmentParams:
        """Draw per-sample sub-policies, probability draws and signs on the generator's device."""
        device = generator.device
        if self.op_table.device != device:
            self.to(device)
        policy = (torch.rand(batch, generator=generator, device=device) * self.num_sub_policies).long()
        policy = policy.clamp(max=self.num_sub_policies - 1)
        uniform = torch.rand(batch, 2, generator=generator, device=device)
        negate = torch.rand(batch, 2, generator=generator, device=device) < 0.5
        applied = uniform <= self.probability_table[policy]
        op_index = torch.where(applied, self.op_table[policy], OP_INDEX["Identity"])
        magnitude = self.magnitude_table[policy]
        magnitude = torch.where(negate & self.signed_table[policy], -magnitude, magnitude)
        return AutoAugmentParams(policy, uniform, negate, op_index, magnitude)

    def apply(self, pixels: Tensor, params: AutoAugmentParams) -> Tensor:
        """Apply the drawn sub-policies to pixel images ``[B, C, H, W]``."""
        for slot in range(2):
            pixels = apply_augment_ops(pixels, params.op_index[:, slot], params.magnitude[:, slot], self.candidates)
        return pixels


class RandAugmentParams(NamedTuple):
    """Per-sample RandAugment draws: ``op [B, N]`` indices into :data:`RANDAUGMENT_OPS`, ``negate
    [B, N]`` sign flips, resolved global ``op_index [B, N]`` and signed ``magnitude [B, N]``."""

    op: Tensor
    negate: Tensor
    op_index: Tensor
    magnitude: Tensor


class RandAugment(torch.nn.Module):
    """Per-sample torchvision ``RandAugment(num_ops, magnitude, num_magnitude_bins)`` (NEAREST, zero fill).

    Each of ``num_ops`` rounds draws one of the 14 ops uniformly per sample and negates a signed
    magnitude with probability 1/2.
    """

    def __init__(self, image_size: int, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31) -> None:
        super().__init__()
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude {magnitude} outside [0, {num_magnitude_bins})")
        self.num_ops = num_ops
        values = [float(magnitude_bins(name, num_magnitude_bins, image_size, image_size)[magnitude])
                  for name in RANDAUGMENT_OPS]
        self.register_buffer("op_table", torch.tensor([OP_INDEX[name] for name in RANDAUGMENT_OPS]),
                             persistent=False)
        self.register_buffer("magnitude_table", torch.tensor(values, dtype=torch.float64), persistent=False)
        self.register_buffer("signed_table", torch.tensor([is_signed(name) for name in RANDAUGMENT_OPS]),
                             persistent=False)

    def sample(self, batch: int, generator: torch.Generator) -> RandAugmentParams:
        """Draw ``num_ops`` ops and signs per sample on the generator's device."""
        device = generator.device
        if self.op_table.device != device:
            self.to(device)
        count = len(RANDAUGMENT_OPS)
        op = (torch.rand(batch, self.num_ops, generator=generator, device=device) * count).long().clamp(max=count - 1)
        negate = torch.rand(batch, self.num_ops, generator=generator, device=device) < 0.5
        magnitude = self.magnitude_table[op]
        magnitude = torch.where(negate & self.signed_table[op], -magnitude, magnitude)
        return RandAugmentParams(op, negate, self.op_table[op], magnitude)

    def apply(self, pixels: Tensor, params: RandAugmentParams) -> Tensor:
        """Apply the drawn ops in sequence to pixel images ``[B, C, H, W]``."""
        for round_index in range(self.num_ops):
            pixels = apply_augment_ops(
                pixels, params.op_index[:, round_index], params.magnitude[:, round_index], RANDAUGMENT_OPS
            )
        return pixels
