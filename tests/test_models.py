"""Backbones and heads."""

import pytest
import torch

from ltcore.config import resolve
from ltcore.engine.runs import prepare
from ltcore.models import (CifarResNet, CosineClassifier, LinearClassifier, MLPHead,
                           torchvision_resnet)
from ltcore.plugins import Plugins
from ltcore.testing import FAST_SETTINGS


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


def test_linear_classifier_default_init_is_nn_linear_and_kaiming_normal_is_the_reference():
    torch.manual_seed(3)
    default = LinearClassifier(64, 10)
    torch.manual_seed(3)
    plain = torch.nn.Linear(64, 10)
    assert torch.equal(default.weight, plain.weight) and torch.equal(default.bias, plain.bias)

    torch.manual_seed(3)
    kaiming = LinearClassifier(64, 1000, init="kaiming_normal")
    torch.manual_seed(3)
    expected = torch.nn.Linear(64, 1000)  # the same draws: nn.Linear's, then kaiming_normal_
    torch.nn.init.kaiming_normal_(expected.weight)
    assert torch.equal(kaiming.weight, expected.weight)
    assert torch.equal(kaiming.bias, expected.bias)
    # kaiming_normal_ (fan_in, ReLU gain): standard deviation sqrt(2 / fan_in)
    assert abs(kaiming.weight.std().item() - (2 / 64) ** 0.5) < 0.005
    torch.manual_seed(4)
    kaiming.reset_parameters()  # a later re-initialisation (cRT, ICCL) uses the same init
    assert abs(kaiming.weight.std().item() - (2 / 64) ** 0.5) < 0.005
    with pytest.raises(ValueError, match="kaiming_normal"):
        LinearClassifier(4, 2, init="xavier")


@pytest.mark.parametrize("assignment, backbone, expected", [
    ("model.classifier_init=auto", "resnet8", "kaiming_normal"),
    ("model.classifier_init=auto", "resnet50", "default"),
    ("model.classifier_init=default", "resnet8", "default"),
    ("model.classifier_init=kaiming_normal", "resnet50", "kaiming_normal"),
])
def test_classifier_init_follows_the_backbone_unless_set(assignment, backbone, expected):
    plugins = Plugins()
    settings = resolve(plugins, ["ce"], assignments=[*FAST_SETTINGS, assignment])
    run = prepare(plugins, ["ce"], settings)
    assert run.build_model("linear", backbone=backbone).classifier.init == expected
