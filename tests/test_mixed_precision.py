"""Mixed precision: a training step under ``torch.autocast`` (bfloat16 on
CPU; float16 and bfloat16 on CUDA when there is a GPU) gives finite losses,
outputs and gradients close to float32, and the TTT inner step runs in
float32 inside it.

Tolerances. bfloat16 keeps 8 significant bits: one rounding is off by up to
u = 2^-8 = 0.0039 (relative). Under autocast the linear layers and
convolutions run in bfloat16, so every block adds a few such roundings;
through the 17 blocks of ViT3-T they add up like a random walk to about
``sqrt(#roundings) * u`` in relative (norm-wise) error, measured at 0.5-2 %
for the outputs. ``OUT_RTOL = 0.05`` (about 13 u) is twice the worst measured
value. Gradients go through twice as many roundings and through train-mode
BatchNorm; they are compared by cosine similarity with the float32 ones
(``GRAD_COS``), per parameter tensor.
"""
import copy
import math

import pytest
import torch
from _helpers import (DET_CFG, SEG_CFG, demo_cfg, demo_model, det_sample,
                      seg_sample)

from mmvit3 import ViT3
from mmvit3.models import ttt_fast
from mmvit3.models.ttt_fast import TTTInnerFunction, ttt_inner_fast

OUT_RTOL = 0.05
GRAD_COS = 0.98
LOSS_RTOL = 0.05

DEVICES = [('cpu', torch.bfloat16)]
if torch.cuda.is_available():
    DEVICES += [('cuda', torch.float16), ('cuda', torch.bfloat16)]


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(
        a.double().flatten(), b.double().flatten(), dim=0).item()


def backbone_step(model, x, device, dtype):
    """Forward + backward of a fixed random projection of every output;
    returns the outputs (float32) and the gradients."""
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


@pytest.mark.parametrize('device,dtype', DEVICES)
def test_backbone_training_step_under_autocast(device, dtype):
    torch.manual_seed(0)
    model = ViT3(arch='tiny', drop_path_rate=0.).to(device).train()
    x = torch.randn(2, 3, 64, 96, device=device)
    ref_outs, ref_loss, ref_grads = backbone_step(model, x, device,
                                                  torch.float32)
    outs, loss, grads = backbone_step(model, x, device, dtype)

    assert outs[0].dtype == torch.float32
    assert torch.isfinite(loss)
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert torch.isfinite(o).all(), i
        assert rel_err(o, r) < OUT_RTOL, (i, rel_err(o, r))
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
        if ref_grads[name].norm() > 0:  # conv biases before train-mode BN: 0
            assert cosine(g, ref_grads[name]) > GRAD_COS, (
                name, cosine(g, ref_grads[name]))


@pytest.mark.parametrize('device,dtype', DEVICES)
def test_inner_step_runs_in_float32_under_autocast(device, dtype, monkeypatch):
    """Inside autocast the inner step sees float32 with autocast off, and
    its result is the float32 computation rounded once to the input's
    dtype: nothing of the update is lost to low precision."""
    seen = []
    forward = TTTInnerFunction.forward

    def spy(ctx, qkv, *args):
        seen.append((qkv.dtype, torch.is_autocast_enabled(device)))
        return forward(ctx, qkv, *args)

    monkeypatch.setattr(TTTInnerFunction, 'forward', staticmethod(spy))
    torch.manual_seed(0)
    heads, d, hw = 2, 32, (9, 13)
    n, c = hw[0] * hw[1], heads * 32
    proj = torch.nn.Linear(c, 3 * c + 3 * d).to(device)
    w1, w2 = (torch.randn(1, heads, d, d, device=device).mul_(0.02)
              .requires_grad_() for _ in range(2))
    w3 = torch.randn(d, 1, 3, 3, device=device).mul_(0.02).requires_grad_()
    x = torch.randn(2, n, c, device=device)

    with torch.autocast(device, dtype=dtype):
        qkv = proj(x)
        assert qkv.dtype == dtype  # autocast made the projection low precision
        out = ttt_inner_fast(qkv, w1, w2, w3, hw, heads, 1 / 3, 1.)
    assert seen == [(torch.float32, False)]
    assert out.dtype == dtype

    ref = ttt_inner_fast(qkv.detach().float(), w1, w2, w3, hw, heads, 1 / 3, 1.)
    torch.testing.assert_close(out, ref.to(dtype), rtol=0, atol=0)

    # the same inputs through the inner step in low precision (the plain,
    # spec-literal maths, since the fast path's complex RoPE has no 16-bit
    # kernels) lose much more
    qkv_low = qkv.detach()
    low = ttt_fast_lowprec(qkv_low, w1.to(dtype), w2.to(dtype), w3.to(dtype),
                           hw, heads)
    assert rel_err(out, ref) < rel_err(low, ref) / 2


@pytest.mark.parametrize('config', [DET_CFG, SEG_CFG])
def test_demo_model_training_step_under_bf16_autocast(config):
    """Mask R-CNN and UperNet of the demo configs, two 64x64 images: one
    training step under CPU bfloat16 autocast against float32."""
    det = config == DET_CFG
    model = demo_model(demo_cfg(config)).train()
    samples = [(det_sample if det else seg_sample)(64, 64, seed=s)
               for s in (0, 1)]

    def step(dtype):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same proposal / RoI sampling
        data = model.data_preprocessor(
            dict(inputs=[s[0] for s in samples],
                 data_samples=[copy.deepcopy(s[1]) for s in samples]), True)
        with torch.autocast('cpu', dtype=dtype,
                            enabled=dtype != torch.float32):
            with torch.no_grad():
                feats = [f.float() for f in model.extract_feat(data['inputs'])]
            loss, log_vars = model.parse_losses(model(**data, mode='loss'))
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
        assert math.isfinite(value), key
        if 'loss' in key:
            assert abs(value - ref_vars[key]) <= LOSS_RTOL * abs(
                ref_vars[key]) + 1e-3, (key, value, ref_vars[key])
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
