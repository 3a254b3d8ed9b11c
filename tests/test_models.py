"""Backbones and heads."""

import pytest
import torch

from ltcore.models import CifarResNet, CosineClassifier, MLPHead, torchvision_resnet


def test_resnet32_is_the_ldam_variant():
    net = CifarResNet(5)
    assert net.feature_dim == 64
    backbone = sum(p.numel() for p in net.parameters())
    assert backbone + 64 * 10 + 10 == 464_154  # the published ResNet-32 size with a 10-class fc
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in net.modules())


@pytest.mark.parametrize("name, dim", [("resnet50", 2048), ("resnext50_32x4d", 2048)])
def test_torchvision_backbones_drop_their_fc(name, dim):
    net = torchvision_resnet(name)()
    assert net.feature_dim == dim and isinstance(net.fc, torch.nn.Identity)


def test_cosine_classifier_is_scaled_cosine():
    head = CosineClassifier(4, 3, scale=30.0)
    x = torch.randn(5, 4)
    logits = head(x)
    expected = 30 * torch.nn.functional.cosine_similarity(x[:, None], head.weight[None], dim=2)
    torch.testing.assert_close(logits, expected)
    assert logits.abs().max() <= 30 + 1e-5


def test_mlp_head_shape():
    head = MLPHead(64, 128, hidden=512)
    assert head(torch.randn(3, 64)).shape == (3, 128)
