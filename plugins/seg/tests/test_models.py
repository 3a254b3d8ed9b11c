"""The FCN dense backbones: shapes at stride 8, the auxiliary head, gradients and the dilated
ResNet-50 of fcn_r50-d8 (built without weights)."""

import math

import pytest
import torch
from torch import nn

from ltcore_seg.models import FCNHead, fcn_resnet50_d8, fcn_small


@pytest.mark.parametrize("height, width", [(48, 48), (33, 50), (17, 9), (8, 8), (1, 23)])
def test_fcn_small_outputs_the_feature_maps_at_stride_8_rounding_up(height, width):
    model = fcn_small(width=4).eval()
    features, aux = model(torch.randn(2, 3, height, width))
    expected = (math.ceil(height / 8), math.ceil(width / 8))
    assert features.shape == (2, model.feature_dim, *expected) == (2, 8, *expected)
    assert aux.shape == (2, model.aux_dim, *expected) == (2, 4, *expected)
    assert model.output_stride == 8


def test_without_aux_the_aux_features_are_none_and_no_aux_head_exists():
    model = fcn_small(in_channels=1, width=4, aux=False).eval()
    features, aux = model(torch.randn(1, 1, 24, 16))
    assert aux is None and model.aux_dim is None and model.aux_head is None
    assert features.shape == (1, 8, 3, 2)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = fcn_small(width=4).train()
    features, aux = model(torch.randn(2, 3, 32, 32))
    (features * torch.randn_like(features)).sum().backward(retain_graph=True)
    (aux * torch.randn_like(aux)).sum().backward()
    silent = [name for name, p in model.named_parameters()
              if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent


def test_fcn_head_concatenates_its_input_and_fuses_it_to_its_channels():
    head = FCNHead(6, 4, num_convs=2, concat_input=True, dropout=0.1)
    assert [block[0].in_channels for block in head.convs] == [6, 4]
    assert head.conv_cat[0].in_channels == 10 and head.conv_cat[0].out_channels == 4
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1
    assert FCNHead(6, 4, num_convs=1, concat_input=False).conv_cat is None
    assert head.eval()(torch.randn(1, 6, 5, 5)).shape == (1, 4, 5, 5)


def test_fcn_resnet50_d8_is_dilated_to_stride_8_with_the_fcn_r50_d8_heads():
    torch.manual_seed(0)
    model = fcn_resnet50_d8(pretrained=False).eval()
    body = model.body
    assert not hasattr(body, "avgpool") and not hasattr(body, "fc")
    assert body.layer2[0].conv2.stride == (2, 2)
    assert body.layer3[0].conv2.stride == body.layer4[0].conv2.stride == (1, 1)
    assert body.layer3[0].conv2.dilation == (1, 1) and body.layer3[1].conv2.dilation == (2, 2)
    assert body.layer4[0].conv2.dilation == (2, 2)
    assert body.layer4[1].conv2.dilation == body.layer4[2].conv2.dilation == (4, 4)
    head, aux_head = model.decode_head, model.aux_head
    assert [b[0].in_channels for b in head.convs] == [2048, 512]
    assert head.conv_cat[0].in_channels == 2560 and head.conv_cat[0].kernel_size == (3, 3)
    assert len(aux_head.convs) == 1 and aux_head.conv_cat is None
    assert aux_head.convs[0][0].in_channels == 1024
    with torch.no_grad():
        features, aux = model(torch.randn(1, 3, 64, 64))
    assert (model.feature_dim, model.aux_dim) == (512, 256)
    assert features.shape == (1, 512, 8, 8) and aux.shape == (1, 256, 8, 8)


def test_fcn_resnet50_d8_names_its_layers_for_layer_decay():
    timm_models = pytest.importorskip("timm.models")
    model = fcn_resnet50_d8(in_channels=1, aux=False)
    assert model.body.conv1.in_channels == 1
    layer_of = timm_models.group_parameters(model, model.group_matcher(coarse=False),
                                            reverse=True)
    assert layer_of["body.conv1.weight"] == 0
    assert layer_of["body.layer1.0.conv1.weight"] == 1
    assert layer_of["body.layer4.2.conv3.weight"] == 16
    assert layer_of["decode_head.conv_cat.0.weight"] == max(layer_of.values()) == 17


def test_fcn_small_names_its_stages_for_layer_decay():
    timm_models = pytest.importorskip("timm.models")
    model = fcn_small(width=2)
    layer_of = timm_models.group_parameters(model, model.group_matcher(coarse=False),
                                            reverse=True)
    assert layer_of["body.stage1.0.0.weight"] == 0
    assert layer_of["body.stage2.1.0.weight"] == 1
    assert layer_of["body.stage4.0.weight"] == 3
    assert layer_of["aux_head.convs.0.0.weight"] == layer_of["decode_head.conv_cat.0.weight"] == 4
