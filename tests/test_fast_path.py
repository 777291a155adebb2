"""The fast path (custom autograd functions, channels-last convolutions)
against the plain, spec-literal implementation: outputs and every gradient."""
import pytest
import torch

from mmvit3 import ViT3
from mmvit3.models.conv_fast import Conv2dFunction
from mmvit3.models.ttt_fast import (LayerNormLinearFunction, MlpTailFunction,
                                    TTTInnerFunction)

RTOL = 1e-5


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def run(model, x, seed=3):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    outs = model(x)
    gen = torch.Generator().manual_seed(seed)
    sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)).sum()
        for o in outs).backward()
    return outs, x.grad, {n: p.grad for n, p in model.named_parameters()}


def bias_before_train_bn(model):
    """Conv biases followed by a BatchNorm in training mode: their exact
    gradient is zero, so any two computations differ only by rounding noise."""
    return {f'{n}.conv.bias' for n, m in model.named_modules()
            if hasattr(m, 'norm') and isinstance(m.norm, torch.nn.BatchNorm2d)
            and m.norm.training and getattr(m.conv, 'bias', None) is not None}


def errors(result, reference, skip=()):
    """Relative error of every output and gradient against the reference."""
    outs, grad_x, grad_params = result
    ref_outs, ref_x, ref_params = reference
    errs = {f'out{i}': rel_err(a, b) for i, (a, b) in enumerate(zip(outs, ref_outs))}
    errs['input'] = rel_err(grad_x, ref_x)
    errs.update({n: rel_err(grad_params[n], g) for n, g in ref_params.items()
                 if n not in skip})
    return errs


def assert_same(result, reference, rtol, skip=()):
    bad = {k: v for k, v in errors(result, reference, skip).items() if not v < rtol}
    assert not bad, bad


@pytest.mark.parametrize('batch,hw,with_cp,norm_eval', [
    (1, (37, 53), False, False),
    (2, (45, 29), True, False),
    (2, (21, 67), False, True),
    (1, (33, 33), True, True),
])
def test_fast_path_equals_plain(batch, hw, with_cp, norm_eval):
    """Same maths: the fast path equals the plain path in float64 to
    rounding. Float32 accuracy: the fast path in float32 is within 1e-5 of
    the exact (float64) result, or no further from it than twice the plain
    path's own float32 error on the same input. Train-mode BatchNorm over a
    2x2 last stage amplifies float32 rounding to ~1e-4 in *any*
    implementation, and a ReLU whose input rounds to the other side of zero
    flips one gradient entry. Where BatchNorm is frozen (``norm_eval``) the
    two float32 paths agree within 1e-5 directly."""
    torch.manual_seed(0)
    kwargs = dict(arch='tiny', drop_path_rate=0., with_cp=with_cp, norm_eval=norm_eval)
    plain = ViT3(fast_path=False, **kwargs).double().train()
    fast = ViT3(fast_path=True, **kwargs).double().train()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(batch, 3, *hw, dtype=torch.float64)
    skip = bias_before_train_bn(plain)
    assert bool(skip) != norm_eval

    reference = run(plain, x)
    assert_same(run(fast, x), reference, 1e-10, skip)

    plain32 = ViT3(fast_path=False, **kwargs).train()
    plain32.load_state_dict(plain.state_dict())
    result32, plain_result32 = run(fast.float(), x.float()), run(plain32, x.float())
    plain_worst = max(errors(plain_result32, reference, skip).values())
    assert_same(result32, reference, max(RTOL, 2 * plain_worst), skip)
    if norm_eval:
        assert_same(result32, plain_result32, RTOL)


def test_switching_paths_keeps_weights_and_results():
    torch.manual_seed(0)
    model = ViT3('tiny').eval()
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        fast = model(x)
        plain = model.set_fast_path(False)(x)
    assert not model.layers[1].blocks[0].attn.fast_path
    for a, b in zip(fast, plain):
        assert rel_err(a, b) < RTOL


@pytest.mark.parametrize('batch,hw', [(1, (41, 59)), (2, (24, 30))])
def test_inference_with_folded_batchnorm_equals_plain(batch, hw):
    """Without autograd the fast path folds eval-mode BatchNorms into the
    convolutions before them: same results as the plain path with
    non-trivial running statistics."""
    torch.manual_seed(0)
    plain = ViT3('tiny', fast_path=False).double().eval()
    gen = torch.Generator().manual_seed(1)
    for m in plain.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(c, generator=gen))
            m.bias.data.copy_(torch.randn(c, generator=gen))
    fast = ViT3('tiny', fast_path=True).double().eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(batch, 3, *hw, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(fast(x), plain(x)):
            assert rel_err(a, b) < 1e-10
        for a, b in zip(fast.float()(x.float()), plain.float()(x.float())):
            assert rel_err(a, b) < RTOL


@pytest.mark.parametrize('kernel,stride,padding,bias', [(3, 2, 1, False), (3, 1, 1, True),
                                                        (1, 1, 0, True), (1, 1, 0, False)])
def test_conv_function_matches_autograd(kernel, stride, padding, bias):
    """Conv2dFunction's per-pass layouts (and 1x1 as a linear layer),
    checked numerically, and its output against F.conv2d."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 7, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True) if bias else None
    out = Conv2dFunction.apply(x, w, b, stride, padding)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, torch.nn.functional.conv2d(x, w, b, stride, padding))
    inputs = (x, w) + ((b, ) if bias else ())
    assert torch.autograd.gradcheck(
        lambda x, w, *b: Conv2dFunction.apply(x, w, b[0] if b else None, stride, padding),
        inputs, eps=1e-6, atol=1e-6)


def test_fast_functions_in_float64_match_autograd():
    """The hand-written backward passes, checked numerically."""
    torch.manual_seed(0)
    b, h, w, c, d = 2, 3, 4, 64, 32
    qkv = torch.randn(b, h * w, 3 * c + 3 * d, dtype=torch.float64, requires_grad=True)
    w1 = (torch.randn(1, 2, d, d, dtype=torch.float64) * 0.1).requires_grad_()
    w2 = (torch.randn(1, 2, d, d, dtype=torch.float64) * 0.1).requires_grad_()
    w3 = (torch.randn(d, 1, 3, 3, dtype=torch.float64) * 0.1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda *t: TTTInnerFunction.apply(*t, (h, w), 2, 1 / 3, 1.0),
        (qkv, w1, w2, w3), eps=1e-6, atol=1e-6, fast_mode=True)
    x = torch.randn(b, h * w, 16, dtype=torch.float64, requires_grad=True)
    dw = torch.randn(16, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(16, dtype=torch.float64, requires_grad=True)
    fc2 = (torch.randn(8, 16, dtype=torch.float64) * 0.3).requires_grad_()
    fc2_bias = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *t: MlpTailFunction.apply(*t, (h, w)), (x, dw, bias, fc2, fc2_bias),
        eps=1e-6, atol=1e-6, fast_mode=True)
    norm_w = torch.randn(16, dtype=torch.float64, requires_grad=True)
    norm_b = torch.randn(16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, nw, nb, w, b: LayerNormLinearFunction.apply(x, nw, nb, 1e-5, w, b, x.dtype),
        (x, norm_w, norm_b, fc2, fc2_bias), eps=1e-6, atol=1e-6, fast_mode=True)


def test_stem_gradient_with_batch_one():
    """Regression: a batch-1 gradient reaching a BatchNorm with an unusual
    stride used to come out wrong on CPU; both paths are checked numerically."""
    torch.manual_seed(0)
    from mmvit3.models.vit3 import ConvStem
    for fast_path in (False, True):
        stem = ConvStem(3, 64, fast_path=fast_path).double().train()
        x = torch.randn(1, 3, 16, 20, dtype=torch.float64, requires_grad=True)
        w = torch.randn(1, 20, 64, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda t: (stem(t)[0] * w).sum(), (x,),
                                        eps=1e-6, atol=1e-5, rtol=1e-4)
