"""The plain ViT3 backbone (PlainViT3): the released model's parameters and
names, any input size, the backbone options, the fused kernels against the
plain modules, loading the authors' ImageNet file, the simple feature
pyramid, and the configs in MMDetection and MMSegmentation."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import authors_config, authors_training_state, save_authors_file

from mmvit3 import PlainViT3
from mmvit3.errors import CheckpointMismatchError
from mmvit3.models import PLAIN_LAYOUT, checkpoint_filter_fn, impl
from mmvit3.models.simple_fpn import LayerNorm2d, SimpleFPN

ROOT = Path(__file__).resolve().parents[1]
NAMES_FILE = Path(__file__).parent / 'data' / 'vit3_plain_tiny_state_dict.txt'
WIDTH = {'tiny': 192, 'small': 384, 'base': 768}
HEADS = {'tiny': 6, 'small': 6, 'base': 12}
# The released figures: without the final norm and the classifier, and with
# both (the authors' ImageNet model, 1000 classes).
PARAMS_BACKBONE = {'tiny': 5_956_032, 'small': 23_413_632, 'base': 89_285_376}
PARAMS_CLASSIFIER = {'tiny': 6_149_416, 'small': 23_799_400, 'base': 90_055_912}
SMALL = dict(embed_dims=64, depth=3, num_heads=2)  # fast; d = 32


def listing():
    entries = {}
    for line in NAMES_FILE.read_text().splitlines():
        if line and not line.startswith('#'):
            name, shape = line.split(' ', 1)
            entries[name] = tuple(int(s) for s in shape.strip('()').split(',') if s.strip())
    return entries


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------------------
# the released model


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_parameter_counts_match_released_figures(arch):
    """Blocks and patch embedding alone; then with the final norm (the last
    block's output norm) and the authors' 1000-class head."""
    model = PlainViT3(arch=arch, out_indices=(-1, ))
    backbone = sum(p.numel() for n, p in model.named_parameters() if not n.startswith('norm.'))
    assert backbone == PARAMS_BACKBONE[arch]
    head = torch.nn.Linear(model.embed_dims, 1000)
    total = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in head.parameters())
    assert total == PARAMS_CLASSIFIER[arch]


def test_state_dict_names_and_shapes_match_released_file():
    """Every entry of the released ViT3-T file but the classifier head, by
    name and shape."""
    expected = {k: v for k, v in listing().items() if not k.startswith('head.')}
    assert len(expected) == 208
    got = {k: tuple(v.shape) for k, v in PlainViT3(arch='tiny').state_dict().items()}
    assert got == expected


@pytest.mark.parametrize('arch', ['small', 'base'])
def test_inner_module_2_is_head_dim_wide(arch):
    attn = PlainViT3(arch=arch).blocks[0].attn
    c, d = WIDTH[arch], WIDTH[arch] // HEADS[arch]
    assert d == 64 and not attn.use_rope
    assert tuple(attn.qkv.weight.shape) == (3 * c + 3 * d, c)
    assert tuple(attn.w1.shape) == (1, HEADS[arch], d, d)
    assert tuple(attn.w3.shape) == (d, 1, 3, 3)
    assert tuple(attn.proj.weight.shape) == (c, c + d)


def test_layer_norms_and_initialisation_follow_the_release():
    torch.manual_seed(0)
    model = PlainViT3(arch='tiny', out_indices=(3, 11))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 12 + 2 and all(m.eps == 1e-6 for m in norms)
    block = model.blocks[4]
    assert block.attn.qkv.bias.abs().sum() == 0 and block.mlp.fc1.bias.abs().sum() == 0
    assert abs(block.attn.qkv.weight.std().item() - 0.02) < 0.003
    assert abs(block.attn.w2.std().item() - 0.02) < 0.003
    assert torch.all(model.norm3.weight == 1) and torch.all(model.norm.bias == 0)
    assert not hasattr(block.mlp, 'dwc')


# ---------------------------------------------------------------------------
# shapes and options


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
@pytest.mark.parametrize('hw', [(224, 224), (237, 341), (20, 28), (9, 40)])
@pytest.mark.parametrize('batch', [1, 2])
def test_any_input_size_gives_a_stride_16_map(arch, hw, batch):
    """Any h x w, not only squares: the image is padded right / bottom to
    multiples of 16, the grid is ceil(H/16) x ceil(W/16)."""
    model = PlainViT3(arch=arch, out_indices=(2, 5, 8, 11)).eval()
    with torch.no_grad():
        outs = model(torch.randn(batch, 3, *hw))
    assert len(outs) == 4
    for out in outs:
        assert out.shape == (batch, WIDTH[arch], math.ceil(hw[0] / 16), math.ceil(hw[1] / 16))
        assert torch.isfinite(out).all()


def test_padding_is_right_and_bottom_only():
    """An image padded by hand to a multiple of 16 gives the same maps."""
    torch.manual_seed(0)
    model = PlainViT3(arch=SMALL).eval()
    x = torch.randn(1, 3, 37, 50)
    padded = torch.zeros(1, 3, 48, 64)
    padded[..., :37, :50] = x
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], model(padded)[0])


def test_rows_and_columns_are_not_mixed_up():
    """A non-square grid is a grid of its own h x w: transposing the image
    transposes the maps (the released code would read it as a square)."""
    torch.manual_seed(0)
    model = PlainViT3(arch=SMALL).double().eval()
    x = torch.randn(1, 3, 48, 80, dtype=torch.float64)
    with torch.no_grad():
        a = model(x)[0]
        b = model(x.transpose(-1, -2))[0]
    assert a.shape[-2:] == (3, 5)
    # the depth-wise kernels are not symmetric, so only the shape transposes
    assert b.shape[-2:] == (5, 3)
    sym = PlainViT3(arch=SMALL).double().eval()
    for m in sym.modules():  # symmetric 3x3 kernels: the maps transpose exactly
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3):
            m.weight.data = (m.weight.data + m.weight.data.transpose(-1, -2)) / 2
        if hasattr(m, 'w3'):
            m.w3.data = (m.w3.data + m.w3.data.transpose(-1, -2)) / 2
    sym.patch_embed.proj.weight.data = (sym.patch_embed.proj.weight.data
                                        + sym.patch_embed.proj.weight.data.transpose(-1, -2)) / 2
    with torch.no_grad():
        torch.testing.assert_close(sym(x.transpose(-1, -2))[0], sym(x)[0].transpose(-1, -2))


def test_out_indices_norm_names_and_arch_forms():
    model = PlainViT3(arch='t', out_indices=(-1, 3))
    assert model.out_indices == (11, 3)
    assert hasattr(model, 'norm') and hasattr(model, 'norm3') and not hasattr(model, 'norm11')
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        outs = model.eval()(x)
    assert len(outs) == 2  # in block order
    assert PlainViT3(arch='B').embed_dims == 768
    custom = PlainViT3(arch=dict(embed_dims=96, depth=2, num_heads=3), out_indices=0)
    assert custom.out_indices == (0, ) and custom.blocks[0].attn.head_dim == 32
    assert not hasattr(custom, 'norm')


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='huge'), r"Unknown PlainViT3 arch 'huge'.*'base'.*'small'.*'tiny'"),
    (dict(arch=dict(embed_dims=64, depth=2)), r"lacks \['num_heads'\]"),
    (dict(arch=dict(embed_dims=100, depth=2, num_heads=3)), 'multiple of'),
    (dict(arch=dict(embed_dims=64, depth=0, num_heads=2)), 'at least 1'),
    (dict(out_indices=(12, )), 'out of range'),
    (dict(frozen_stages=13), 'frozen_stages'),
    (dict(impl='fast'), 'impl must be one of'),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PlainViT3(**kwargs)


@pytest.mark.parametrize('impl', ['fused', 'plain'])
def test_every_parameter_gets_a_gradient(impl):
    """... with the parameter's own strides (DDP's gradient buckets)."""
    torch.manual_seed(0)
    model = PlainViT3(arch='tiny', out_indices=(2, 5, 8, 11), drop_path_rate=0.,
                      impl=impl).train()
    outs = model(torch.randn(2, 3, 45, 61))
    sum(o.square().mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad
    assert not [n for n, p in model.named_parameters() if p.grad.stride() != p.stride()]


def test_with_cp_equals_no_checkpointing():
    torch.manual_seed(0)
    plain = PlainViT3(arch=SMALL, drop_path_rate=0.2, drop_rate=0.1).train()
    ckpt = PlainViT3(arch=SMALL, drop_path_rate=0.2, drop_rate=0.1, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 37, 53)
    grads = []
    for model in (plain, ckpt):
        torch.manual_seed(1)  # same masks; checkpointing replays them
        xi = x.clone().requires_grad_()
        out, = model(xi)
        (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out, xi.grad, [p.grad for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    for a, b in zip(grads[0][2], grads[1][2]):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # skipped without gradients
        assert not ckpt.eval()(x)[0].requires_grad


@pytest.mark.parametrize('frozen_stages', [0, 4, 12])
def test_frozen_stages_stay_frozen(frozen_stages):
    model = PlainViT3(arch='tiny', out_indices=(2, 11), frozen_stages=frozen_stages).train()
    frozen = [model.patch_embed] + list(model.blocks[:frozen_stages])
    frozen += [model.norm2] if frozen_stages > 2 else []
    frozen += [model.norm] if frozen_stages == 12 else []
    live = list(model.blocks[frozen_stages:])
    live += [model.norm2] if frozen_stages <= 2 else []
    live += [model.norm] if frozen_stages < 12 else []
    for module in frozen:
        assert not module.training and all(not p.requires_grad for p in module.parameters())
    for module in live:
        assert module.training and all(p.requires_grad for p in module.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    outs = model(torch.randn(1, 3, 32, 32))
    if frozen_stages < 12:
        sum(o.sum() for o in outs).backward()
        optimizer.step()
    assert model.patch_embed.proj.weight.grad is None
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    frozen_names = {n for n, p in model.named_parameters()
                    if any(p is q for m in frozen for q in m.parameters())}
    assert not changed & frozen_names  # a step changes no frozen weight...
    if frozen_stages < 12:  # ...and does change the live ones
        assert f'blocks.{frozen_stages}.attn.qkv.weight' in changed


def test_norm_eval_is_accepted_and_changes_nothing():
    """The plain model has no BatchNorm: norm_eval (kept so ViT3 settings
    carry over) leaves every part in training mode."""
    model = PlainViT3(arch=SMALL, norm_eval=True).train()
    assert all(m.training for m in model.modules())


def test_stochastic_depth_rises_linearly():
    model = PlainViT3(arch='tiny', drop_path_rate=0.3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for b in model.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 12).tolist())


# ---------------------------------------------------------------------------
# fused kernels


def _run(model, x, seed=3):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    torch.manual_seed(11)  # dropout / drop-path masks
    outs = model(x)
    gen = torch.Generator().manual_seed(seed)
    sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)).sum()
        for o in outs).backward()
    return list(outs) + [x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize('arch,batch,hw,with_cp,drop', [
    ('tiny', 1, (37, 53), False, 0.),
    ('tiny', 2, (45, 29), True, 0.),
    (dict(embed_dims=128, depth=2, num_heads=2), 2, (50, 34), False, 0.),  # d = 64
    (dict(embed_dims=128, depth=2, num_heads=2), 1, (33, 70), False, 0.1),  # dropout
])
def test_fused_equals_plain(arch, batch, hw, with_cp, drop):
    """Same maths in float64: every output and gradient to rounding, in
    training mode (also with dropout and drop path, whose masks are drawn
    in the same order); float32 within 1e-4 of the exact result (with
    dropout: of the plain model's float32 result, under the same masks)."""
    torch.manual_seed(0)
    kwargs = dict(arch=arch, out_indices=(0, -1), with_cp=with_cp, drop_rate=drop,
                  drop_path_rate=2 * drop)
    plain = PlainViT3(impl='plain', **kwargs).double().train()
    fused = PlainViT3(impl='fused', **kwargs).double().train()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(batch, 3, *hw, dtype=torch.float64)
    reference = _run(plain, x)
    got = _run(fused, x)
    bad = {i: e for i, (a, b) in enumerate(zip(got, reference)) if not (e := rel_err(a, b)) < 1e-10}
    assert not bad, bad
    got32 = _run(fused.float(), x.float())
    if drop:  # float32 draws other masks than float64: against the plain model in float32
        reference = _run(plain.float(), x.float())
    bad = {i: e for i, (a, b) in enumerate(zip(got32, reference)) if not (e := rel_err(a, b)) < 1e-4}
    assert not bad, bad


def test_impl_switch_reaches_every_block():
    model = PlainViT3(arch=SMALL)
    block = model.blocks[0]
    cpu, meta = torch.empty(1), torch.empty(1, device='meta')
    assert impl.fused_forward(block, cpu) is not None  # auto: fused on CPU
    assert impl.fused_forward(block, meta) is None
    model.set_impl('plain')
    assert {b.impl for b in model.blocks} == {'plain'}
    assert impl.fused_forward(block, cpu) is None
    with pytest.raises(ValueError, match='impl must be one of'):
        model.set_impl('triton')


# ---------------------------------------------------------------------------
# the authors' ImageNet file


def classification_file(arch='tiny', seed=0):
    """A checkpoint as the authors' plain ViT3 ImageNet script saves it
    (vittt/utils.py): every listed entry (the 1000-class head and the final
    norm included), optimizer and scheduler state and the run's yacs config."""
    torch.manual_seed(seed)
    model = PlainViT3(arch=arch, out_indices=(-1, ))
    for p in model.parameters():  # weights unlike a fresh init
        p.data.normal_(0, 0.05)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd['head.weight'] = torch.randn(1000, model.embed_dims)
    sd['head.bias'] = torch.randn(1000)
    return {
        'model': sd,
        **authors_training_state(sd),
        'max_accuracy': 76.5,
        'epoch': 299,
        'config': authors_config(f'vittt_{arch}'),
    }


@pytest.fixture
def official_file(tmp_path):
    ckpt = classification_file()
    return save_authors_file(ckpt, tmp_path / 'vittt_tiny.pth'), ckpt


def test_file_layout_matches_the_listing(official_file):
    _, ckpt = official_file
    assert {k: tuple(v.shape) for k, v in ckpt['model'].items()} == listing()


def test_round_trip_through_the_released_layout(official_file, log_lines):
    """init_cfg=Pretrained, safely (the pickled yacs config is allowed by
    name): every block and the final norm load, the head is dropped, the
    other output norms stay at their initial values, and the log says so;
    the backbone then computes the authors' features (the final-norm map of
    their classifier)."""
    path, ckpt = official_file
    model = PlainViT3(out_indices=(2, 5, 11), drop_path_rate=0.,
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    fresh = model.norm2.weight.detach().clone()
    model.init_weights()
    sd = model.state_dict()
    for k, v in ckpt['model'].items():
        if not k.startswith('head.'):
            torch.testing.assert_close(sd[k], v, msg=k)
    torch.testing.assert_close(model.norm2.weight, fresh)
    text = '\n'.join(log_lines)
    for piece in ['PlainViT3: loaded 208 entries', "entry 'model'", 'classifier head',
                  'head.weight', 'head.bias', 'untouched', 'norm2.weight', 'norm5.bias']:
        assert piece in text, text
    reference = PlainViT3(out_indices=(-1, ), impl='plain').eval()
    reference.load_state_dict({k: v for k, v in ckpt['model'].items()
                               if not k.startswith('head.')})
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)[-1], reference(x)[0], rtol=1e-4, atol=1e-5)


def test_filter_reports_drops_and_keeps_the_input(official_file):
    _, ckpt = official_file
    weights, report = checkpoint_filter_fn(ckpt, PlainViT3(out_indices=(4, )))
    assert report.dropped == {
        'classifier head': ['head.bias', 'head.weight'],
        'final norm; the last block is not in out_indices': ['norm.bias', 'norm.weight']}
    assert report.untouched == ['norm4.weight', 'norm4.bias']
    assert len(weights) == 206 and 'head.weight' in ckpt['model']
    assert PLAIN_LAYOUT.infer_arch(ckpt['model']) == dict(embed_dims=192, depth=12, num_heads=6)


@pytest.mark.parametrize('file_arch,model_arch,match', [
    ('tiny', 'small', r'holds a plain ViT3 tiny, the model is a plain ViT3 small.*'
                      r'shape mismatches: .*file \(192'),
    ('small', 'base', r'holds a plain ViT3 small, the model is a plain ViT3 base'),
])
def test_file_of_another_arch_is_a_clear_error(file_arch, model_arch, match):
    with pytest.raises(CheckpointMismatchError, match=match):
        checkpoint_filter_fn(classification_file(file_arch), PlainViT3(arch=model_arch))


def test_hvit3_file_is_a_clear_error():
    from mmvit3 import ViT3
    sd = ViT3(arch='tiny').state_dict()
    with pytest.raises(CheckpointMismatchError,
                       match=r'holds no plain ViT3 .*entries the model lacks: layers\.'):
        checkpoint_filter_fn({'model': sd}, PlainViT3())


def test_convert_then_load_safely(official_file, tmp_path):
    """tools/convert_checkpoint.py reads a plain file as one (arch from the
    file), keeps the final norm, and its output loads into the same
    backbone as the original."""
    from mmvit3.cli.convert_checkpoint import convert
    path, _ = official_file
    out = tmp_path / 'vit3_plain_tiny.pth'
    text = convert(str(path), str(out))
    assert 'of a PlainViT3 tiny' in text and 'head.weight' in text
    saved = torch.load(out, weights_only=True)
    assert saved['meta']['arch'] == 'tiny' and saved['meta']['model'] == 'PlainViT3'
    assert 'norm.weight' in saved['state_dict'] and len(saved['state_dict']) == 208
    converted = PlainViT3(out_indices=(5, 11), init_cfg=dict(type='Pretrained',
                                                             checkpoint=str(out)))
    converted.init_weights()
    original = PlainViT3(out_indices=(5, 11), init_cfg=dict(type='Pretrained',
                                                            checkpoint=str(path)))
    original.init_weights()
    torch.testing.assert_close(converted.state_dict(), original.state_dict())
    with pytest.raises(ValueError, match='plain ViT3 tiny, the model is a plain ViT3 small'):
        convert(str(path), str(tmp_path / 'other.pth'), arch='small')


def test_tensors_only_and_detection_layouts_load_without_trust(tmp_path):
    """A tensors-only file (``'state_dict'``) loads with the default, safe
    loader; a whole detector's ``backbone.`` entries are picked out."""
    ckpt = classification_file()
    weights = {k: v for k, v in ckpt['model'].items()}
    safe = tmp_path / 'weights.pth'
    torch.save({'state_dict': weights}, safe)
    model = PlainViT3(init_cfg=dict(type='Pretrained', checkpoint=str(safe)))
    model.init_weights()
    torch.testing.assert_close(model.blocks[7].attn.w3, weights['blocks.7.attn.w3'])

    det = {f'backbone.{k}': v for k, v in weights.items() if not k.startswith('head.')}
    det['neck.fpn1.0.weight'] = torch.randn(192, 96, 2, 2)
    path = tmp_path / 'mask_rcnn.pth'
    torch.save({'state_dict': det, 'meta': {'epoch': 12}}, path)
    model = PlainViT3(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    torch.testing.assert_close(model.norm.weight, weights['norm.weight'])


def _detector(backbone):
    model = torch.nn.Module()
    model.backbone = backbone
    model.neck = torch.nn.Linear(2, 2)
    return model


def _runner_file(model, ddp=False):
    prefix = 'module.' if ddp else ''
    return {'meta': {'iter': 4}, 'optimizer': {},
            'state_dict': {prefix + k: v for k, v in model.state_dict().items()}}


def test_whole_detector_checkpoint_must_fit_the_plain_backbone(tmp_path):
    """``load_from`` / ``resume`` / test.py's checkpoint, through mmvit3's
    ``CheckpointSafetyHook``: a detector file whose plain backbone is
    another arch is refused, naming the file and both archs, for fine-tuning
    as for evaluation; a backbone-only file is pointed to ``init_cfg``; an
    H-ViT3 detector's file and a plain one swapped are named as such."""
    from types import SimpleNamespace

    from mmvit3 import ViT3
    from mmvit3.engine.hooks import CheckpointSafetyHook
    from mmvit3.engine import check_model_checkpoint
    wider = dict(embed_dims=96, depth=3, num_heads=3)
    model = _detector(PlainViT3(arch=SMALL))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for strict in (False, True):
        check_model_checkpoint(model, _runner_file(_detector(PlainViT3(arch=SMALL))), strict)
        check_model_checkpoint(model, _runner_file(model, ddp=True), strict)
        with pytest.raises(CheckpointMismatchError,
                           match=r'fit this PlainViT3 backbone; the file holds a plain ViT3 '
                                 r"\{'embed_dims': 96.*the model is a plain ViT3 "
                                 r"\{'embed_dims': 64.*set arch.*shape mismatches"):
            check_model_checkpoint(model, _runner_file(_detector(PlainViT3(arch=wider))),
                                   strict)
    with pytest.raises(CheckpointMismatchError, match=r'model entries the file lacks: blocks\.3\.'):
        check_model_checkpoint(_detector(PlainViT3(arch=dict(SMALL, depth=4))),
                               _runner_file(model))
    hvit3 = _detector(ViT3(arch=dict(embed_dims=[32, 64, 64, 96], depths=[1, 1, 1, 1])))
    with pytest.raises(CheckpointMismatchError, match=r'holds no plain ViT3 \(no blocks'):
        check_model_checkpoint(model, _runner_file(hvit3))
    with pytest.raises(CheckpointMismatchError, match=r'holds no ViT3 \(no layers'):
        check_model_checkpoint(hvit3, _runner_file(model))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    # through the hook, with the released archs: the file and both archs named
    tiny = _detector(PlainViT3(arch='tiny'))
    files = {'small': tmp_path / 'mask_rcnn_vit3_plain_s.pth', 'alone': tmp_path / 'vittt_s.pth'}
    checkpoints = {'small': _runner_file(_detector(PlainViT3(arch='small'))),
                   'alone': {'model': PlainViT3(arch='small').state_dict()}}
    for what, match in (('small', r'mask_rcnn_vit3_plain_s\.pth: Checkpoint does not fit this '
                                  r'PlainViT3 backbone; the file holds a plain ViT3 small, the '
                                  r'model is a plain ViT3 tiny: set arch'),
                        ('alone', r'vittt_s\.pth: The checkpoint holds a PlainViT3 backbone '
                                  r'alone.*init_cfg')):
        for training in (False, True):  # test.py, or load_from to fine-tune
            runner = SimpleNamespace(cfg={}, model=tiny, _load_from=str(files[what]),
                                     _resume=False, _train_loop=None)
            if training:
                from mmengine.runner import IterBasedTrainLoop
                runner._train_loop = IterBasedTrainLoop.__new__(IterBasedTrainLoop)
            with pytest.raises(CheckpointMismatchError, match=match):
                CheckpointSafetyHook().after_load_checkpoint(runner, checkpoints[what])


def test_plain_weights_with_nan_are_refused(tmp_path):
    """The plain loader refuses a file holding NaN / Inf weights, as the
    H-ViT3 one does (a diverged run's file)."""
    from mmvit3.errors import NonFiniteCheckpointError
    weights = PlainViT3(arch=SMALL).state_dict()
    weights['blocks.1.mlp.fc1.weight'][0, 0] = float('nan')
    path = tmp_path / 'diverged.pth'
    torch.save({'state_dict': weights}, path)
    model = PlainViT3(arch=SMALL, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(NonFiniteCheckpointError, match=r'diverged\.pth.*blocks\.1\.mlp\.fc1'):
        model.init_weights()


# ---------------------------------------------------------------------------
# the simple feature pyramid


@pytest.mark.parametrize('hw', [(64, 96), (37, 53)])
def test_simple_fpn_strides_4_to_64(hw):
    from mmengine.registry import DefaultScope
    backbone = PlainViT3(arch=SMALL).eval()
    with DefaultScope.overwrite_default_scope('mmdet'):  # where 'LN2d' is registered
        neck = SimpleFPN(64, [16, 32, 64, 64], 32, num_outs=5,
                         norm_cfg=dict(type='LN2d', requires_grad=True)).eval()
    assert isinstance(neck.fpn1[1], LayerNorm2d)
    assert isinstance(neck.lateral_convs[0].norm, LayerNorm2d)
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, *hw))
        outs = neck(feats)
    h, w = math.ceil(hw[0] / 16), math.ceil(hw[1] / 16)
    shapes = [tuple(o.shape[-2:]) for o in outs]
    assert shapes == [(4 * h, 4 * w), (2 * h, 2 * w), (h, w), (h // 2, w // 2),
                      (math.ceil((h // 2) / 2), math.ceil((w // 2) / 2))]
    assert all(o.shape[:2] == (2, 32) for o in outs)


def test_simple_fpn_bad_channels_and_ln2d():
    with pytest.raises(ValueError, match=r'\[C/4, C/2, C, C\] = \[16, 32, 64, 64\]'):
        SimpleFPN(64, [64, 128, 256, 512], 32, num_outs=5)
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFPN(64, [16, 32, 64, 64], 32, num_outs=3)
    neck = SimpleFPN(64, [16, 32, 64, 64], 8, num_outs=4)
    with pytest.raises(ValueError, match='backbone_channel is 64.*gave 32'):
        neck([torch.randn(1, 32, 4, 4)])
    norm = LayerNorm2d(6)
    norm.weight.data.normal_()
    x = torch.randn(2, 6, 3, 5)
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6, ), norm.weight, norm.bias,
                                         1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), ref)


# ---------------------------------------------------------------------------
# registries and configs

BUILD = """
import sys
import torch
from mmengine.config import Config
cfg = Config.fromfile(sys.argv[1])
assert 'mmvit3' in sys.modules, 'custom_imports did not import mmvit3'
from {scope}.registry import MODELS
from {scope}.utils import register_all_modules
register_all_modules()
for m in ('backbone', 'neck'):
    if 'init_cfg' in cfg.model.get(m, {{}}):
        cfg.model[m].init_cfg = None  # no pretrained file here
model = MODELS.build(cfg.model).eval()
assert type(model.backbone).__name__ == 'PlainViT3'
with torch.no_grad():
    feats = model.extract_feat(torch.randn(1, 3, 64, 96))
print('built', type(model).__name__, type(model.neck).__name__,
      [tuple(f.shape[1:]) for f in feats])
"""

CONFIGS = [
    ('mmdet', 'mask_rcnn_vit3_plain_t_coco', 'MaskRCNN SimpleFPN',
     [(256, 16, 24), (256, 8, 12), (256, 4, 6), (256, 2, 3), (256, 1, 2)]),
    ('mmseg', 'upernet_vit3_plain_t_ade20k', 'EncoderDecoder MultiLevelNeck',
     [(192, 16, 24), (192, 8, 12), (192, 4, 6), (192, 2, 3)]),
]


@pytest.mark.parametrize('scope,name,built,shapes', CONFIGS)
def test_config_builds_in_its_scope(tmp_path, scope, name, built, shapes):
    """The released-recipe config, in a fresh interpreter (custom_imports
    alone imports mmvit3), builds and gives the heads' pyramid."""
    script = tmp_path / 'build.py'
    script.write_text(BUILD.format(scope=scope))
    result = subprocess.run([sys.executable, str(script), str(ROOT / 'configs' / f'{name}.py')],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'built {built} {shapes}' in result.stdout, result.stdout


@pytest.mark.parametrize('variant,width,arch,drop_path', [
    ('t', 192, 'tiny', 0.1), ('s', 384, 'small', 0.1), ('b', 768, 'base', 0.1)])
def test_detection_configs_follow_the_recipe(variant, width, arch, drop_path):
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'configs' / f'mask_rcnn_vit3_plain_{variant}_coco.py'))
    backbone, neck = cfg.model.backbone, cfg.model.neck
    assert backbone.type == 'PlainViT3' and backbone.out_indices == (11, )
    assert backbone.arch == arch and backbone.drop_path_rate == drop_path
    assert backbone.init_cfg.checkpoint.startswith('https://')  # the authors' (test_metafile.py)
    assert neck.type == 'SimpleFPN' and neck.backbone_channel == width
    assert neck.in_channels == [width // 4, width // 2, width, width]
    assert cfg.train_cfg.max_epochs == 12
    text = (ROOT / 'configs' / f'mask_rcnn_vit3_plain_{variant}_coco.py').read_text()
    assert 'no official result' in text.lower()


@pytest.mark.parametrize('variant,width,arch', [('t', 192, 'tiny'), ('s', 384, 'small'),
                                                ('b', 768, 'base')])
def test_segmentation_configs_follow_the_recipe(variant, width, arch):
    from mmengine.config import Config
    text = (ROOT / 'configs' / f'upernet_vit3_plain_{variant}_ade20k.py').read_text()
    cfg = Config.fromfile(str(ROOT / 'configs' / f'upernet_vit3_plain_{variant}_ade20k.py'))
    assert cfg.model.backbone.type == 'PlainViT3' and cfg.model.backbone.arch == arch
    assert cfg.model.backbone.out_indices == (2, 5, 8, 11) and cfg.model.pretrained is None
    assert cfg.model.decode_head.in_channels == [width] * 4
    assert cfg.model.neck.type == 'MultiLevelNeck'
    assert cfg.model.neck.in_channels == [width] * 4
    assert cfg.model.neck.scales == [4, 2, 1, 0.5]
    assert cfg.train_cfg.max_iters == 160000
    assert 'no official result' in text.lower()


def test_registered_in_both_registries():
    import mmvit3
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    assert DET.get('PlainViT3') is mmvit3.PlainViT3 and SEG.get('PlainViT3') is mmvit3.PlainViT3
    assert DET.get('SimpleFPN') is SimpleFPN and DET.get('LN2d') is LayerNorm2d
    mmvit3.register_models()  # again: no error
    model = SEG.build(dict(type='PlainViT3', arch='small', out_indices=(5, 11)))
    assert model.embed_dims == 384 and model.out_indices == (5, 11)


@pytest.mark.parametrize('arch,flops', [('tiny', 1_223_495_424), ('small', 4_816_903_680)])
def test_flops_at_224_match_the_released_figures(arch, flops):
    """The authors' classifier (backbone, final norm, mean over tokens, 1000-class
    head) at 224x224, counted with mmengine's FLOP analyzer as they were:
    1.223G (T) and 4.817G (S)."""
    from mmvit3.analysis import make_flop_analyzer

    class Classifier(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.backbone = PlainViT3(arch, out_indices=(-1, ))
            self.head = torch.nn.Linear(self.backbone.embed_dims, 1000)

        def forward(self, x):
            return self.head(self.backbone(x)[0].flatten(2).mean(-1))

    analyzer = make_flop_analyzer(Classifier().eval(), (torch.randn(1, 3, 224, 224), ))
    assert analyzer.total() == flops


# ---------------------------------------------------------------------------
# the demo configs, through the tools


@pytest.mark.parametrize('config,data,metric', [
    ('configs/demo/mask_rcnn_vit3_plain_demo.py', 'det', 'coco/segm_mAP'),
    ('configs/demo/upernet_vit3_plain_demo.py', 'seg', 'mIoU'),
])
def test_demo_trains_and_tests(demo_root, tmp_path, config, data, metric):
    """Two iterations of tools/train.py on the demo data, evaluated, then
    tools/test.py on the checkpoint."""
    from _helpers import (det_data_overrides, loader_overrides, page_command, run_tool,
                          seg_data_overrides, short_run_overrides)
    overrides = (det_data_overrides if data == 'det' else seg_data_overrides)(demo_root)
    work = tmp_path / 'work'
    ckpt = work / 'iter_2.pth'
    train, test = {  # the demo page's commands
        'det': (page_command(r'python tools/train\.py configs/demo/mask_rcnn_vit3_plain_demo\.py'),
                page_command(r'python tools/test\.py configs/demo/mask_rcnn_vit3_plain_demo\.py ',
                             {r'work_dirs/\S+\.pth': ckpt})),
        'seg': (page_command(r'python tools/train\.py configs/demo/upernet_vit3_plain_demo\.py'),
                page_command(r'python tools/test\.py configs/demo/upernet_vit3_plain_demo\.py ',
                             {r'work_dirs/\S+\.pth': ckpt}))}[data]
    assert train[1] == test[1] == config
    rc, out = run_tool(*train, '--work-dir', work, '--cfg-options',
                       *short_run_overrides(), *overrides)
    assert rc == 0, out[-5000:]
    assert "type='PlainViT3'" in out  # the config mmengine printed
    assert ckpt.is_file(), out[-3000:]
    assert metric in out
    rc, out = run_tool(*test, '--work-dir', tmp_path / 'test',
                       '--cfg-options', *loader_overrides('', num_workers=0,
                                                          persistent_workers=False),
                       *overrides)
    assert rc == 0, out[-5000:]
    assert metric in out


# ---------------------------------------------------------------------------
# tools/benchmark.py: plain ViT3 against DeiT


def test_benchmark_deit_attention_written_out_equals_sdpa():
    """The two DeiT variants the benchmark times are one model: the same
    weights give the same maps, of the input's stride-16 grid."""
    from mmvit3 import benchmark as bench
    torch.manual_seed(0)
    sdpa = bench.build('deit-t', 'backbone').double().eval()
    naive = bench.build('deit-t-naive', 'backbone').double().eval()
    naive.load_state_dict(sdpa.state_dict())
    for p in sdpa.parameters():  # non-trivial position table and class token
        p.data.add_(torch.randn_like(p) * 0.02)
    naive.load_state_dict(sdpa.state_dict())
    x = torch.randn(1, 3, 40, 72, dtype=torch.float64)
    with torch.no_grad():
        a, = sdpa(x)
        b, = naive(x)
    assert a.shape == (1, 192, 2, 4)  # floor(H/16) x floor(W/16), as DeiT
    torch.testing.assert_close(a, b)
    assert 5.5e6 < sum(p.numel() for p in sdpa.parameters()) < 5.8e6  # DeiT-T
    assert type(bench.build('plain-vit3-s', 'backbone')).__name__ == 'PlainViT3'
    with pytest.raises(ValueError, match='single-scale'):
        bench.build('plain-vit3-t', 'detector')


def test_benchmark_plain_comparison_rows():
    from mmvit3 import benchmark as bench

    def row(model, mode, seconds, step_gib, size=(1248, 1248)):
        return dict(level='backbone', model=model, mode=mode, size=list(size),
                    seconds=seconds, step_gib=step_gib)

    results = [row('plain-vit3-t', 'infer', 1.0, 0.1), row('deit-t', 'infer', 2.5, 0.2),
               row('deit-t-naive', 'infer', 8.0, 1.0),
               row('plain-vit3-t', 'infer', 1.0, 0.1, (224, 224)),
               row('deit-t', 'train', 1.0, 1.0),
               row('plain-vit3-s', 'infer', 2.0, 0.2), row('deit-s', 'infer', 9.0, 0.4)]
    lines = bench.plain_comparison(results)
    assert lines[2] == ('| 1248x1248 | plain ViT3-T vs DeiT-T (SDPA) | infer | 2.50x | 50.0% | '
                        'ViT3 paper: 4.6x faster, 9.7% of the memory |')
    assert lines[3].startswith('| 1248x1248 | plain ViT3-T vs DeiT-T (written-out attention) '
                               '| infer | 8.00x | 10.0% |')
    # the papers give no S figure: the row says so instead of borrowing T's
    assert lines[4] == ('| 1248x1248 | plain ViT3-S vs DeiT-S (SDPA) | infer | 4.50x | 50.0% | '
                        'none (the papers compare T only) |')
    assert len(lines) == 5  # nothing to compare at 224, nor in training
