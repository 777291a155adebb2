"""The ViT3 backbone (docs/model.md), in the style of mmdet's test_swin.py."""
import math
from pathlib import Path

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmvit3 import ViT3

SPEC_PARAMS = {'tiny': 28_191_584, 'small': 53_850_080, 'base': 93_729_776}
WIDTHS = {'tiny': [64, 128, 320, 512], 'small': [64, 128, 320, 512],
          'base': [96, 192, 448, 640]}
NAMES_FILE = Path(__file__).parent / 'data' / 'h_vit3_tiny_state_dict.txt'


def spec_entries():
    entries = {}
    for line in NAMES_FILE.read_text().splitlines():
        if line and not line.startswith('#'):
            name, shape = line.split(' ', 1)
            entries[name] = tuple(int(s) for s in shape.strip('()').split(',') if s.strip())
    return entries


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_parameter_count_matches_spec(arch):
    model = ViT3(arch=arch)
    assert sum(p.numel() for p in model.parameters()) == SPEC_PARAMS[arch]


def test_state_dict_names_and_shapes_match_released_files():
    expected = {k: v for k, v in spec_entries().items() if not k.endswith('rope.rotations')}
    got = {k: tuple(v.shape) for k, v in ViT3(arch='tiny').state_dict().items()}
    assert got == expected


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
@pytest.mark.parametrize('hw', [(224, 224), (237, 341), (20, 28)])
@pytest.mark.parametrize('batch', [1, 2])
def test_output_shapes_and_strides(arch, hw, batch):
    model = ViT3(arch=arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(batch, 3, *hw))
    assert len(outs) == 4
    for i, out in enumerate(outs):
        stride = 2 ** (i + 2)
        assert out.shape == (batch, WIDTHS[arch][i], math.ceil(hw[0] / stride),
                             math.ceil(hw[1] / stride))
        assert torch.isfinite(out).all()


def test_out_indices_and_arch_aliases():
    model = ViT3(arch='t', out_indices=(1, 3)).eval()
    assert not hasattr(model, 'norm0') and hasattr(model, 'norm3')
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == [128, 512]
    assert ViT3(arch='B').embed_dims == WIDTHS['base']
    custom = ViT3(arch=dict(embed_dims=[32, 64], depths=[1, 1]), out_indices=(-1,))
    assert custom.out_indices == (1,)
    with torch.no_grad():
        out, = custom(torch.randn(1, 3, 33, 17))
    assert out.shape == (1, 64, 5, 3)


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='huge'), r"Unknown ViT3 arch 'huge'.*'base'.*'small'.*'tiny'"),
    (dict(arch=dict(embed_dims=[64, 128])), r"lacks \['depths'\]"),
    (dict(arch=dict(embed_dims=[64, 100], depths=[1, 1])), 'multiples of 32'),
    (dict(arch=dict(embed_dims=[64], depths=[1, 2])), 'equal length'),
    (dict(arch=dict(embed_dims=[64], depths=[0])), 'at least 1'),
    (dict(out_indices=(4,)), 'out of range'),
    (dict(frozen_stages=5), 'frozen_stages'),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViT3(**kwargs)


def test_arch_must_be_str_or_dict():
    with pytest.raises(ValueError, match='str or a dict'):
        ViT3(arch=3)


def test_training_on_a_one_pixel_last_map_is_a_clear_error():
    """At batch 1, an input of at most 32 px on both sides leaves the last
    down-sampling's BatchNorm one value per channel: a message saying what
    to do instead of torch's; larger inputs, batch 2, eval mode and
    ``norm_eval`` run."""
    arch = dict(embed_dims=[32, 64, 64, 96], depths=[1, 1, 1, 1])
    model = ViT3(arch=arch).train()
    with pytest.raises(ValueError, match=r'a 32x20 input at batch 1 .* larger than 32 px on one '
                       r'side, with batch 2 or more, or with norm_eval=True'):
        model(torch.randn(1, 3, 32, 20))
    for shape in ((1, 3, 33, 20), (2, 3, 32, 20)):
        model(torch.randn(*shape))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 20))
    ViT3(arch=arch, norm_eval=True).train()(torch.randn(1, 3, 32, 20))
    two = ViT3(arch=dict(embed_dims=[32, 64], depths=[1, 1]), out_indices=(0, 1)).train()
    with pytest.raises(ValueError, match='a 8x8 input'):  # two stages: stride 8
        two(torch.randn(1, 3, 8, 8))
    two(torch.randn(1, 3, 9, 8))


@pytest.mark.parametrize('impl', ['fused', 'plain'])
def test_every_parameter_gets_a_gradient(impl):
    """... with the parameter's own strides, as DDP's gradient buckets need
    (depth-wise weights get theirs back from a channels-last layout)."""
    torch.manual_seed(0)
    model = ViT3(arch='tiny', drop_path_rate=0., impl=impl).train()
    outs = model(torch.randn(2, 3, 45, 61))
    sum(o.square().mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad
    strides = [n for n, p in model.named_parameters() if p.grad.stride() != p.stride()]
    assert not strides


def test_with_cp_equals_plain_path():
    torch.manual_seed(0)
    plain = ViT3(arch='tiny', drop_path_rate=0.2).train()
    ckpt = ViT3(arch='tiny', drop_path_rate=0.2, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 37, 53)
    x_plain, x_cp = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(1)
    out_plain = plain(x_plain)
    torch.manual_seed(1)  # same drop-path masks; checkpointing replays them
    out_cp = ckpt(x_cp)
    for a, b in zip(out_plain, out_cp):
        torch.testing.assert_close(a, b)
    sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in out_plain).backward()
    sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in out_cp).backward()
    torch.testing.assert_close(x_plain.grad, x_cp.grad)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_with_cp_skipped_without_grad():
    model = ViT3(arch='tiny', with_cp=True).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert all(not o.requires_grad for o in outs)


@pytest.mark.parametrize('frozen_stages', [0, 2])
def test_frozen_stages_stay_frozen(frozen_stages):
    model = ViT3(arch='tiny', frozen_stages=frozen_stages)
    model.train()
    frozen = [model.patch_embed] + [model.layers[i] for i in range(frozen_stages)] + \
        [getattr(model, f'norm{i}') for i in range(frozen_stages)]
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    live = [model.layers[i] for i in range(frozen_stages, 4)]
    for module in live:
        assert module.training
        assert all(p.requires_grad for p in module.parameters())
    # frozen BN statistics do not move in a training forward
    before = model.patch_embed.conv[0].norm.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.patch_embed.conv[0].norm.running_mean, before)


def test_norm_eval_keeps_batchnorm_in_eval():
    model = ViT3(arch='tiny', norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns)
    assert model.layers[0].blocks[0].training


def test_no_fixed_size_state_and_size_independent_weights():
    """Nothing of fixed size is stored: the same weights run any h x w."""
    model = ViT3(arch='tiny').eval()
    assert not any('rope' in k for k in model.state_dict())
    with torch.no_grad():
        a = model(torch.randn(1, 3, 64, 64))[0]
        b = model(torch.randn(1, 3, 128, 96))[0]
    assert a.shape[-2:] == (16, 16) and b.shape[-2:] == (32, 24)


def test_initialisation_follows_spec():
    torch.manual_seed(0)
    model = ViT3(arch='tiny')
    block = model.layers[2].blocks[0]
    assert block.attn.qkv.bias.abs().sum() == 0
    assert abs(block.attn.qkv.weight.std().item() - 0.02) < 0.003
    assert abs(block.attn.w1.std().item() - 0.02) < 0.003
    assert torch.all(block.norm1.weight == 1) and torch.all(block.norm1.bias == 0)


def test_stochastic_depth_rises_linearly():
    model = ViT3(arch='tiny', drop_path_rate=0.3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for s in model.layers for b in s.blocks]
    expected = torch.linspace(0, 0.3, 17).tolist()
    assert rates == pytest.approx(expected)
