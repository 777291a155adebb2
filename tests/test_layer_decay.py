"""Layer-wise lr decay (LayerDecayOptimWrapperConstructor): each parameter's
lr and weight decay for both backbones, the recipes built through mmdet's
and mmseg's registries, bad rates refused."""
import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

import mmvit3  # noqa: F401  (registers)
from mmvit3.errors import ConfigError
from mmvit3.models import PlainViT3, ViT3

from _helpers import ROOT, build

LR, WD = 1e-3, 0.05


class Detector(nn.Module):
    """A backbone and a head, as the constructor sees a detector."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(4, 4)


def groups_by_name(model, rate, **paramwise):
    wrapper = build_optim_wrapper(model, dict(
        constructor='LayerDecayOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
        paramwise_cfg=dict(layer_decay_rate=rate, **paramwise)))
    names = {id(p): n for n, p in model.named_parameters()}
    got = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            got[names[id(p)]] = (group['lr'], group['weight_decay'])
    assert set(got) == set(names.values()), 'a parameter is missing from the optimizer'
    return got


def expected_depth_vit3(name):
    """Swin's rule for depths (2, 1): stem 0, blocks 1, 2, stage 0's
    down-sampling with its last block (2), stage 1's block 3, norms 4."""
    if name.startswith('patch_embed'):
        return 0
    if name.startswith('layers.0.blocks.'):
        return 1 + int(name.split('.')[3])
    if name.startswith('layers.0.downsample'):
        return 2
    if name.startswith('layers.1.blocks.0'):
        return 3
    return 4


def expected_depth_plain(name):
    if name.startswith('patch_embed'):
        return 0
    if name.startswith('blocks.'):
        return 1 + int(name.split('.')[1])
    return 3


@pytest.mark.parametrize('backbone, depth_of, num_layers', [
    (lambda: ViT3(arch=dict(embed_dims=[32, 64], depths=[2, 1]), out_indices=(0, 1)),
     expected_depth_vit3, 5),
    (lambda: PlainViT3(arch=dict(embed_dims=64, depth=2, num_heads=2), out_indices=(0, 1)),
     expected_depth_plain, 4),
], ids=['ViT3', 'PlainViT3'])
def test_every_parameter_gets_the_lr_of_its_depth_and_keeps_its_weight_decay(
        backbone, depth_of, num_layers):
    model = Detector(backbone())
    rate = 0.5
    got = groups_by_name(model, rate, custom_keys={'norm': dict(decay_mult=0.)})
    for name, (lr, wd) in got.items():
        if name.startswith('backbone.'):
            short = name[len('backbone.'):]
            want = LR * rate**(num_layers - 1 - depth_of(short))
            assert lr == pytest.approx(want), name
            assert model.backbone.get_layer_depth(name, 'backbone.') == (depth_of(short),
                                                                        num_layers)
        else:
            assert lr == pytest.approx(LR), name  # the head on top
        assert wd == (0. if 'norm' in name else WD), name


def test_a_rate_of_one_is_mmengines_default_constructor():
    model = Detector(ViT3(arch=dict(embed_dims=[32, 64], depths=[2, 1]), out_indices=(0, 1)))
    ours = groups_by_name(model, 1.0, norm_decay_mult=0.)
    default = build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
        paramwise_cfg=dict(norm_decay_mult=0.)))
    names = {id(p): n for n, p in model.named_parameters()}
    theirs = {names[id(p)]: (g.get('lr', LR), g['weight_decay'])
              for g in default.optimizer.param_groups for p in g['params']}
    assert ours == theirs


@pytest.mark.parametrize('rate', [0, 1.5, -0.1, 'high', True, None])
def test_a_bad_rate_is_refused_naming_the_key(rate):
    with pytest.raises(ConfigError, match='layer_decay_rate'):
        groups_by_name(Detector(ViT3(arch=dict(embed_dims=[32], depths=[1]),
                                     out_indices=(0, ))), rate)


def test_a_backbone_without_depths_is_refused_when_decay_is_asked():
    model = Detector(nn.Conv2d(3, 4, 3))
    with pytest.raises(ConfigError, match='get_layer_depth'):
        groups_by_name(model, 0.9)
    groups_by_name(model, 1.0)  # no decay asked: fine


@pytest.mark.parametrize('config, rate', [
    ('configs/mask_rcnn_vit3_plain_t_coco.py', 0.7),  # ViTDet's
    ('configs/upernet_vit3_plain_t_ade20k.py', 1.0),  # mmseg's DeiT UperNet: none
    ('configs/mask_rcnn_vit3_t_coco.py', 1.0),  # as released
    ('configs/upernet_vit3_t_ade20k.py', 1.0),
])
def test_the_recipes_build_their_optimizer_through_the_libraries_registries(config, rate):
    """The recipe's optimizer from its own config, through the registry of
    its scope (mmdet / mmseg), as their tools build it; AmpOptimWrapper
    swapped for OptimWrapper on this CPU; one key switches decay on."""
    cfg = Config.fromfile(str(ROOT / config))
    init_default_scope(cfg.default_scope)
    model = build(cfg)
    cfg.optim_wrapper.type = 'OptimWrapper'
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == rate
    for want in (rate, 0.9):
        cfg.optim_wrapper.paramwise_cfg.layer_decay_rate = want
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        base = cfg.optim_wrapper.optimizer.lr
        num_layers = model.backbone.get_layer_depth('backbone.x', 'backbone.')[1]
        lowest = min(g.get('lr', base) for g in wrapper.optimizer.param_groups)
        assert lowest == pytest.approx(base * want**(num_layers - 1)), want
