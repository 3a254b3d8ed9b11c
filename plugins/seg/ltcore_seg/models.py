"""FCN segmentation networks as dense backbones.

A dense backbone maps images ``[B, in_channels, H, W]`` to ``(features, aux_features)``:
``features`` ``[B, feature_dim, ceil(H/8), ceil(W/8)]`` are the output of the FCN decode head's
convolutions (what a per-pixel 1x1 classifier takes) and ``aux_features``
``[B, aux_dim, ceil(H/8), ceil(W/8)]`` come from the auxiliary head on an earlier stage (None
without one). The classifiers are not part of these modules.

:func:`fcn_resnet50_d8` follows mmsegmentation's ``fcn_r50-d8``: a ResNet-50 with dilations
(1, 1, 2, 4) and strides (1, 2, 1, 1) (output stride 8), an FCN decode head on ``layer4`` and an
auxiliary FCN head on ``layer3``. :func:`fcn_small` is a few-layer FCN for the CPU and tests.
"""

from __future__ import annotations

import torch
from torch import nn

from ltcore import ConfigError

FCN_RESNET_LAYERS = {"stem": r"^body\.conv1|^body\.bn1", "blocks": r"^body\.layer(\d+)\.(\d+)"}
"""The layers of :func:`fcn_resnet50_d8` in timm's ``group_matcher`` form: the stem, then every
ResNet block in order; the heads, unmatched, form the last layer (timm's rule)."""

FCN_SMALL_LAYERS = {"stem": r"^body\.stage1\.", "blocks": r"^body\.stage(\d+)\."}
"""The layers of :func:`fcn_small` in timm's ``group_matcher`` form: each stage; the heads,
unmatched, form the last layer."""


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1) -> nn.Sequential:
    """A convolution without bias (``same`` padding for stride 1), batch norm and ReLU:
    mmsegmentation's ``ConvModule`` with a BN norm."""
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True))


class FCNHead(nn.Module):
    """mmsegmentation's ``FCNHead`` without its classifier: ``num_convs`` conv-BN-ReLU blocks
    of ``channels``; with ``concat_input`` the input is concatenated to their output and fused
    by one more conv-BN-ReLU; dropout (``Dropout2d``) at the end."""

    def __init__(self, in_channels: int, channels: int, num_convs: int = 2,
                 kernel_size: int = 3, concat_input: bool = True, dropout: float = 0.1):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"an FCN head needs at least one convolution, not {num_convs}")
        self.channels = channels
        self.convs = nn.Sequential(*[
            conv_bn_relu(in_channels if i == 0 else channels, channels, kernel_size)
            for i in range(num_convs)])
        self.conv_cat = (conv_bn_relu(in_channels + channels, channels, kernel_size)
                         if concat_input else None)
        self.dropout = nn.Dropout2d(dropout)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return self.dropout(out)


class FCN(nn.Module):
    """A dense backbone: ``body`` returns ``(earlier_stage, last_stage)`` maps at stride 8, the
    decode head runs on the last stage and the auxiliary head (if any) on the earlier one.

    Attributes: ``feature_dim`` (decode head channels), ``aux_dim`` (auxiliary head channels,
    None without one), ``output_stride`` (8).
    """

    output_stride = 8

    def __init__(self, body: nn.Module, decode_head: FCNHead, aux_head: FCNHead | None,
                 layers: dict):
        super().__init__()
        self.body = body
        self.decode_head = decode_head
        self.aux_head = aux_head
        self.feature_dim = decode_head.channels
        self.aux_dim = aux_head.channels if aux_head is not None else None
        self._layers = layers

    def group_matcher(self, coarse: bool = False) -> dict:
        """The layers in timm's ``group_matcher`` form (for ``optim.layer_decay``)."""
        return self._layers

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        earlier, last = self.body(x)
        aux = self.aux_head(earlier) if self.aux_head is not None else None
        return self.decode_head(last), aux


class ResNetBody(nn.Module):
    """A torchvision ResNet without ``avgpool`` and ``fc``; returns ``(layer3, layer4)``."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(resnet, name))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer3(self.layer2(self.layer1(x)))
        return c3, self.layer4(c3)


def _resnet50_d8(pretrained: bool) -> nn.Module:
    from torchvision.models import ResNet50_Weights, resnet50

    weights = ResNet50_Weights.IMAGENET1K_V1 if pretrained else None
    try:
        return resnet50(weights=weights, replace_stride_with_dilation=[False, True, True])
    except OSError as exc:  # no network and no cached file
        detail = " ".join(str(exc).split())[:160]
        raise ConfigError(f"the ImageNet weights of resnet50 (IMAGENET1K_V1) are not in torch "
                          f"hub's cache and could not be downloaded ({detail}); on a connected "
                          "machine run python -c \"import torchvision; torchvision.models."
                          "resnet50(weights='IMAGENET1K_V1')\" and copy the cache here, or use "
                          "pretrained=False") from None


def _first_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """``conv`` taking ``in_channels``: pretrained, each input channel gets the sum of the RGB
    weights divided by ``in_channels`` (an image repeating one channel gives the RGB response
    to its grey image); otherwise a fresh initialisation, as torchvision's."""
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=False)
    if not pretrained:
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        return new
    with torch.no_grad():
        summed = conv.weight.sum(dim=1, keepdim=True)
        new.weight.copy_(summed.repeat(1, in_channels, 1, 1) / in_channels)
    return new


def fcn_resnet50_d8(in_channels: int = 3, pretrained: bool = False, aux: bool = True) -> FCN:
    """mmsegmentation's ``fcn_r50-d8`` without classifiers: a dilated ResNet-50 (torchvision's,
    ImageNet ``IMAGENET1K_V1`` weights with ``pretrained``), an FCN decode head (2048 -> 512,
    two 3x3 convs, input concatenated and fused) on ``layer4`` and, with ``aux``, an auxiliary
    FCN head (1024 -> 256, one 3x3 conv) on ``layer3``; ``feature_dim`` 512, ``aux_dim`` 256.
    Other than 3 ``in_channels`` replace the first convolution (:func:`_first_conv`)."""
    resnet = _resnet50_d8(pretrained)
    if in_channels != 3:
        resnet.conv1 = _first_conv(resnet.conv1, in_channels, pretrained)
    decode_head = FCNHead(2048, 512, num_convs=2, concat_input=True, dropout=0.1)
    aux_head = FCNHead(1024, 256, num_convs=1, concat_input=False, dropout=0.1) if aux else None
    return FCN(ResNetBody(resnet), decode_head, aux_head, FCN_RESNET_LAYERS)


class SmallBody(nn.Module):
    """Four conv-BN-ReLU stages: ``width``, ``2 * width`` and ``4 * width`` channels each
    halving the resolution (to stride 8), then one 3x3 conv of ``4 * width`` dilated by 2 (as
    a ResNet-d8's ``layer4``). Returns ``(stage3, stage4)``."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.stage1 = nn.Sequential(conv_bn_relu(in_channels, width, stride=2),
                                    conv_bn_relu(width, width))
        self.stage2 = nn.Sequential(conv_bn_relu(width, 2 * width, stride=2),
                                    conv_bn_relu(2 * width, 2 * width))
        self.stage3 = nn.Sequential(conv_bn_relu(2 * width, 4 * width, stride=2),
                                    conv_bn_relu(4 * width, 4 * width))
        self.stage4 = conv_bn_relu(4 * width, 4 * width, dilation=2)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c3 = self.stage3(self.stage2(self.stage1(x)))
        return c3, self.stage4(c3)


def fcn_small(in_channels: int = 3, width: int = 32, aux: bool = True) -> FCN:
    """A small FCN for the CPU and tests: :class:`SmallBody`, an FCN decode head of
    ``2 * width`` channels on its last stage (one 3x3 conv, input concatenated and fused) and,
    with ``aux``, an auxiliary head of ``width`` channels (one 3x3 conv) on the stage before;
    output stride 8, ``feature_dim`` ``2 * width``, ``aux_dim`` ``width``."""
    if width < 1:
        raise ValueError(f"fcn_small needs a width of at least 1, not {width}")
    decode_head = FCNHead(4 * width, 2 * width, num_convs=1, concat_input=True, dropout=0.1)
    aux_head = (FCNHead(4 * width, width, num_convs=1, concat_input=False, dropout=0.1)
                if aux else None)
    return FCN(SmallBody(in_channels, width), decode_head, aux_head, FCN_SMALL_LAYERS)
