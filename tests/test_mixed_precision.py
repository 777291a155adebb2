"""Mixed precision: a training step under ``torch.autocast`` (bfloat16 on
CPU; float16 and bfloat16 on CUDA when there is a GPU) gives finite losses,
outputs and gradients close to float32, and the TTT inner step runs in
float32 inside it.

Tolerances. bfloat16 keeps 8 significant bits: one rounding is off by up to
u = 2^-8 = 0.0039 (relative). Under autocast the linear layers and
convolutions run in bfloat16, so every block adds roundings of that size;
through a randomly initialised ViT3-T in training mode the relative
(norm-wise) error of the stage outputs was measured at 1.1 %, 1.7 %,
2.3-2.7 % and 3.2-4.0 % (stages 1-4, three seeds), growing with depth.
``OUT_RTOL = 0.1`` (about 25 u) is 2.5 times the worst of them. Gradients
pass through twice as many roundings, the first layers' through all blocks
and back: per parameter tensor their cosine similarity with the float32
gradients was at least 0.935; ``GRAD_COS = 0.85`` leaves a margin. Conv
biases right before a training-mode BatchNorm have an exact gradient of zero
(their float32 "gradient" is rounding noise) and are not compared.
"""
import copy
import math

import pytest
import torch
from _helpers import (DET_CFG, SEG_CFG, demo_cfg, demo_model, det_sample,
                      seg_sample)
from test_fused import bias_before_train_bn, rel_err

from mmvit3 import ViT3
from mmvit3.kernels import ttt_fused
from mmvit3.kernels.ttt_fused import ttt_inner

OUT_RTOL = 0.1
GRAD_COS = 0.85
#: Losses of the demo models: the same rounding, on values of order 1.
LOSS_RTOL = 0.1

#: The CUDA cases are always listed, and reported as skipped without a GPU.
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
DEVICES = [('cpu', torch.bfloat16),
           pytest.param('cuda', torch.float16, marks=NEEDS_CUDA),
           pytest.param('cuda', torch.bfloat16, marks=NEEDS_CUDA)]

IMPLS = ['fused', 'plain']


def _as_float(value) -> float:
    """A logged value as a float (mmengine's ``parse_losses`` logs tensors
    that still require grad)."""
    return float(value.detach()) if torch.is_tensor(value) else float(value)


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(
        a.double().flatten(), b.double().flatten(), dim=0).item()


def backbone_step(model, x, device, dtype):
    """Forward + backward of a fixed random projection of every output;
    returns the outputs (as float32), the loss and the gradients."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        outs = model(x)
        gen = torch.Generator().manual_seed(1)
        loss = sum((o.float() * torch.randn(o.shape, generator=gen).to(device)
                    ).mean() for o in outs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return [o.detach().float() for o in outs], loss.detach(), grads


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('device,dtype', DEVICES)
def test_backbone_training_step_under_autocast(device, dtype, impl):
    torch.manual_seed(0)
    model = ViT3(arch='tiny', drop_path_rate=0., impl=impl)
    model = model.to(device).train()
    x = torch.randn(2, 3, 64, 96, device=device)
    ref_outs, _, ref_grads = backbone_step(model, x, device, torch.float32)
    outs, loss, grads = backbone_step(model, x, device, dtype)

    assert torch.isfinite(loss)
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert torch.isfinite(o).all(), i
        assert rel_err(o, r) < OUT_RTOL, (i, rel_err(o, r))
    assert grads.keys() == ref_grads.keys()
    zero = bias_before_train_bn(model)
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
        if name not in zero:
            assert cosine(g, ref_grads[name]) > GRAD_COS, (
                name, cosine(g, ref_grads[name]))


@pytest.mark.parametrize('device,dtype', DEVICES)
def test_inner_step_runs_in_float32_under_autocast(device, dtype, monkeypatch):
    """Inside autocast the inner step sees float32 with autocast off, and
    its result (and gradient) is the float32 computation from the same
    inputs, rounded once to their dtype: nothing of the update is lost to
    low precision, however small it is against the weights."""
    seen = []
    op = torch.ops.mmvit3.ttt_inner

    class Spy:
        def __call__(self, qkv, *args):
            seen.append((qkv.dtype, torch.is_autocast_enabled(device)))
            return op(qkv, *args)

    monkeypatch.setattr(ttt_fused.torch.ops.mmvit3, 'ttt_inner', Spy(), raising=False)
    torch.manual_seed(0)
    heads, d, hw = 2, 32, (9, 13)
    c = heads * d
    proj = torch.nn.Linear(c, 3 * c + 3 * d).to(device)
    w1, w2 = (torch.randn(1, heads, d, d, device=device).mul_(0.02)
              .requires_grad_() for _ in range(2))
    w3 = torch.randn(d, 1, 3, 3, device=device).mul_(0.02).requires_grad_()
    x = torch.randn(2, hw[0] * hw[1], c, device=device)
    args = (w1, w2, w3, hw, heads, 1 / 3, 1.)

    with torch.autocast(device, dtype=dtype):
        qkv = proj(x)
        assert qkv.dtype == dtype  # autocast made the projection low precision
        out = ttt_inner(qkv, *args)
    assert seen == [(torch.float32, False)]
    assert out.dtype == dtype
    grad_out = torch.randn_like(out)
    grad_qkv, = torch.autograd.grad(out, qkv, grad_out)
    assert grad_qkv.dtype == dtype

    qkv32 = qkv.detach().float().requires_grad_()
    ref = ttt_inner(qkv32, *args)
    ref_grad, = torch.autograd.grad(ref, qkv32, grad_out.float())
    torch.testing.assert_close(out, ref.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(grad_qkv, ref_grad.to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize('config', [DET_CFG, SEG_CFG])
def test_demo_model_training_step_under_bf16_autocast(config):
    """Mask R-CNN and UperNet of the demo configs, two 64x64 images: one
    training step under CPU bfloat16 autocast against float32. UperNet runs
    whole under autocast; Mask R-CNN runs its backbone and FPN under it and
    its heads in float32, since mmcv 2.1's CPU NMS and RoIAlign have no
    bfloat16 kernels ("expected scalar type Float but found BFloat16")."""
    det = config == DET_CFG
    model = demo_model(demo_cfg(config)).train()
    samples = [det_sample(64, 64, seed=s) if det else  # demo labels: none ignored
               seg_sample(64, 64, seed=s, ignored=False) for s in (0, 1)]
    extract_feat = model.extract_feat

    def step(dtype):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same proposal / RoI sampling
        data = model.data_preprocessor(
            dict(inputs=[s[0] for s in samples],
                 data_samples=[copy.deepcopy(s[1]) for s in samples]), True)
        enabled = dtype != torch.float32
        if det:
            def features(inputs):
                with torch.autocast('cpu', dtype=dtype, enabled=enabled):
                    return tuple(f.float() for f in extract_feat(inputs))
            model.extract_feat = features
        with torch.autocast('cpu', dtype=dtype, enabled=enabled and not det):
            loss, log_vars = model.parse_losses(model(**data, mode='loss'))
            with torch.no_grad():
                feats = [f.float() for f in model.extract_feat(data['inputs'])]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()
                 if p.grad is not None}
        return feats, log_vars, grads

    ref_feats, ref_vars, ref_grads = step(torch.float32)
    feats, log_vars, grads = step(torch.bfloat16)
    for i, (f, r) in enumerate(zip(feats, ref_feats)):
        assert torch.isfinite(f).all(), i
        assert rel_err(f, r) < OUT_RTOL, (i, rel_err(f, r))
    assert log_vars.keys() == ref_vars.keys()
    for key, value in log_vars.items():
        value = _as_float(value)
        assert math.isfinite(value), key
        if 'loss' in key:
            ref = _as_float(ref_vars[key])
            assert abs(value - ref) <= LOSS_RTOL * abs(ref) + 1e-3, (key, value, ref)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
