"""Backbones and heads, and the bundle a stage trains.

``resnet32`` is the CIFAR ResNet of the LDAM-DRW code (16/32/64 channels, option-A zero-padding
shortcuts, Kaiming init, 64-d pooled feature; it asks for a Kaiming-normal classifier as that
code gives its final linear layer); ``resnet8/20/56`` are the same family with 1/3/9
blocks per stage. ``resnet50`` and ``resnext50`` are torchvision's ImageNet models without their
final fully-connected layer. Both name their layers for layer-wise learning-rate decay
(``group_matcher``, timm's convention). A :class:`ModelBundle` keeps the part of its backbone
that ``model.freeze`` fixes in evaluation mode.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

RESNET_LAYERS = {"stem": r"^conv1|^bn1", "blocks": r"^layer(\d+)\.(\d+)"}
"""The layers of torchvision's ResNets in timm's ``group_matcher`` form: the stem, then every
block in order."""

VIT_LAYERS = {"stem": r"^class_token|^conv_proj|^encoder\.pos_embedding",
              "blocks": [(r"^encoder\.layers\.encoder_layer_(\d+)", None),
                         (r"^encoder\.ln", (99999,))]}
"""The layers of torchvision's vision transformers, as :data:`RESNET_LAYERS`."""


def layer_matcher(layers: dict):
    """A ``group_matcher(coarse=False)`` returning ``layers``, for a module that lacks one."""
    def group_matcher(coarse: bool = False) -> dict:
        return layers
    return group_matcher


class _ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample by 2 and zero-pad the new channels."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = (_ShortcutA(planes) if stride != 1 or in_planes != planes
                         else nn.Identity())

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet family (He et al. 2016, sec. 4.2) as used by LDAM-DRW and its successors."""

    def __init__(self, blocks_per_stage: int, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, planes_in = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for b in range(blocks_per_stage):
                layers.append(BasicBlock(planes_in, planes, stride if b == 0 else 1))
                planes_in = planes
        self.layers = nn.Sequential(*layers)
        self.feature_dim = 64
        self.classifier_init = "kaiming_normal"
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def group_matcher(self, coarse: bool = False) -> dict:
        """The stem, then each block (timm's convention, for ``optim.layer_decay``)."""
        return {"stem": r"^conv1|^bn1", "blocks": r"^layers\.(\d+)"}


def cifar_resnet(blocks_per_stage: int):
    def factory(in_channels: int = 3) -> nn.Module:
        return CifarResNet(blocks_per_stage, in_channels)
    factory.__doc__ = (f"CIFAR ResNet-{6 * blocks_per_stage + 2} (LDAM variant, option-A "
                       "shortcuts), 64-d feature")
    return factory


def torchvision_resnet(name: str):
    def factory(in_channels: int = 3, **options) -> nn.Module:
        from .backbones import torchvision_backbone

        return torchvision_backbone(name, in_channels, **options)
    factory.__doc__ = (f"torchvision {name} without its final fc; options (pretrained=True "
                       "included) go to its builder")
    return factory


def cifar_resnet50(in_channels: int = 3) -> nn.Module:
    """ResNet-50 for 32 x 32 images as SupCon's code (``resnet_big.py``) builds it: torchvision's
    bottleneck ResNet-50 (stride on the 3x3 conv, 1x1-conv + BN projection shortcuts, Kaiming
    fan-out init) with a 3x3 stride-1 stem of 64 channels and no max-pool; 2048-d feature."""
    import torchvision

    model = torchvision.models.resnet50()
    model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.feature_dim = 2048
    model.group_matcher = layer_matcher(RESNET_LAYERS)
    return model


CLASSIFIER_INITS = ("default", "kaiming_normal")
"""Initialisations of the linear classifier: ``default`` is ``nn.Linear``'s (Kaiming uniform,
``a = sqrt(5)``, as torchvision's ImageNet ResNets keep it); ``kaiming_normal`` draws the weight
from ``kaiming_normal_`` as the reference CIFAR ResNet code does for every linear layer (the
bias keeps ``nn.Linear``'s)."""


class LinearClassifier(nn.Linear):
    """A linear classifier; ``weight`` rows are the class vectors.

    ``init`` is one of :data:`CLASSIFIER_INITS`; ``reset_parameters`` redraws with it, so a
    classifier re-initialised later (cRT, ICCL) starts as the first one did.
    """

    def __init__(self, in_dim: int, num_classes: int, init: str = "default"):
        if init not in CLASSIFIER_INITS:
            raise ValueError(f"classifier init must be one of {', '.join(CLASSIFIER_INITS)}, "
                             f"not {init!r}")
        object.__setattr__(self, "init", init)  # read by reset_parameters inside __init__
        super().__init__(in_dim, num_classes)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.init == "kaiming_normal":
            nn.init.kaiming_normal_(self.weight)


class CosineClassifier(nn.Module):
    """Cosine classifier: ``scale * cos(feature, w_c)`` (no bias)."""

    def __init__(self, in_dim: int, num_classes: int, scale: float = 30.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.scale = scale

    def forward(self, x):
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()


class MLPHead(nn.Sequential):
    """Projection MLP ``Linear - BatchNorm - ReLU - Linear`` (SupCon/BCL style)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512):
        super().__init__(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm,
               nn.LocalResponseNorm)


def norm_layers(module: nn.Module) -> list[nn.Module]:
    """The normalisation layers in ``module``: torch's (batch, instance, group, layer, RMS
    norms) and any layer whose class is named ``...Norm`` or ``...Norm1d/2d/3d`` (timm's)."""
    return [m for m in module.modules() if isinstance(m, _NORM_TYPES)
            or re.search(r"Norm([123]d)?$", type(m).__name__)]


class ModelBundle(nn.Module):
    """What a stage trains: a backbone, a classifier and named extra heads.

    ``freeze`` (``none``, ``backbone``, ``backbone-except-norm``: ``model.freeze``) names the
    part of the backbone kept fixed: it stays in
    evaluation mode when the bundle trains, and :meth:`frozen_parameters` are left out of the
    optimiser."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, freeze: str = "none"):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.heads = nn.ModuleDict()
        self.freeze = freeze
        self.architecture: dict | None = None
        """How :meth:`ltcore.Run.build_model` made it (registered names, plugins, options):
        what a saved model is rebuilt from (:mod:`ltcore.standalone`)."""

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The backbone's parameters ``freeze`` fixes (none for ``none``)."""
        if self.freeze == "none":
            return []
        kept = set()
        if self.freeze == "backbone-except-norm":
            kept = {id(p) for layer in norm_layers(self.backbone)
                    for p in layer.parameters(recurse=False)}
        return [p for p in self.backbone.parameters() if id(p) not in kept]

    def train(self, mode: bool = True) -> "ModelBundle":
        """Training or evaluation mode; the frozen part of the backbone stays in evaluation
        mode (BatchNorm keeps its running statistics, dropout is off)."""
        super().train(mode)
        if mode and self.freeze != "none":
            self.backbone.eval()
            if self.freeze == "backbone-except-norm":
                for layer in norm_layers(self.backbone):
                    layer.train()
        return self

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def forward(self, x):
        return self.classifier(self.backbone(x))
