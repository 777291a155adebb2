"""The fused kernels (custom ops, channels-last convolutions) against the
model's plain modules: outputs and every gradient, the switch in both
directions, and the ops' own checks (gradcheck, torch.library.opcheck)."""
import pytest
import torch

from mmvit3 import ViT3
from mmvit3.kernels import linear_cpu
from mmvit3.models import impl
from mmvit3.models.vit3 import ConvStem, PatchMerging

RTOL = 1e-5
#: Float32 against float64 through the whole backbone in training mode: the
#: two implementations round in a different order, and train-mode BatchNorm
#: over small maps amplifies rounding; at batch 1 the fused model's worst
#: gradient was 3.3e-5 from float64 (2.6x the plain model's) on this
#: machine's CPU. A wrong gradient is off by far more.
F32_RTOL = 1e-4


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
def test_fused_equals_plain(batch, hw, with_cp, norm_eval):
    """Same maths: the fused model equals the plain one in float64 to
    rounding. Float32 accuracy: the fused model in float32 is within
    ``F32_RTOL`` of the exact (float64) result, or no further from it than
    twice the plain model's own float32 error on the same input. Train-mode BatchNorm over a
    2x2 last stage amplifies float32 rounding to ~1e-4 in *any*
    implementation, and a ReLU whose input rounds to the other side of zero
    flips one gradient entry. Where BatchNorm is frozen (``norm_eval``) the
    two float32 paths agree within 1e-5 directly."""
    torch.manual_seed(0)
    kwargs = dict(arch='tiny', drop_path_rate=0., with_cp=with_cp, norm_eval=norm_eval)
    plain = ViT3(impl='plain', **kwargs).double().train()
    fast = ViT3(impl='fused', **kwargs).double().train()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(batch, 3, *hw, dtype=torch.float64)
    skip = bias_before_train_bn(plain)
    assert bool(skip) != norm_eval

    reference = run(plain, x)
    assert_same(run(fast, x), reference, 1e-10, skip)

    plain32 = ViT3(impl='plain', **kwargs).train()
    plain32.load_state_dict(plain.state_dict())
    result32, plain_result32 = run(fast.float(), x.float()), run(plain32, x.float())
    plain_worst = max(errors(plain_result32, reference, skip).values())
    assert_same(result32, reference, max(F32_RTOL, 2 * plain_worst), skip)
    if norm_eval:
        assert_same(result32, plain_result32, RTOL)


@pytest.mark.skipif(not linear_cpu.onednn_available(), reason='torch without oneDNN')
def test_onednn_and_blas_matrix_products_give_the_same_model():
    """The float32 matrix products of the fused ops through oneDNN (chosen
    on AVX-512 CPUs) and through the BLAS: the same outputs and gradients
    to float32 rounding, each path taking its own kernels."""
    torch.manual_seed(0)
    model = ViT3(arch='tiny', impl='fused', drop_path_rate=0.).train()
    x = torch.randn(2, 3, 45, 61)
    results, onednn_calls = {}, {}
    try:
        for onednn in (True, False):
            linear_cpu.set_onednn_linear(onednn)
            with torch.profiler.profile() as prof:
                results[onednn] = run(model, x)
            onednn_calls[onednn] = sum(e.count for e in prof.key_averages()
                                       if e.key == 'mkldnn::_linear_pointwise')
    finally:
        linear_cpu.set_onednn_linear(None)
    # qkv and fc1 forward and backward, fc2 forward: five products per block
    assert onednn_calls == {True: 5 * sum(model.depths), False: 0}
    assert_same(results[True], results[False], RTOL, skip=bias_before_train_bn(model))


def _fused_modules(model):
    return [m for m in model.modules() if hasattr(m, 'impl') and m is not model]


@pytest.mark.parametrize('first', ['plain', 'fused'])
def test_switching_both_ways_keeps_weights_and_results(first):
    """``set_impl`` switches every part at any time, in both directions,
    also after ``.to()``; the results stay the same."""
    torch.manual_seed(0)
    model = ViT3('tiny', impl=first).eval()
    x = torch.randn(1, 3, 50, 70)
    second = 'fused' if first == 'plain' else 'plain'
    with torch.no_grad():
        a = model(x)
        b = model.set_impl(second)(x)
        model.to(torch.float64).to(torch.float32)
        c = model.set_impl(first)(x)
    assert all(m.impl == first for m in _fused_modules(model))
    for u, v, w in zip(a, b, c):
        assert rel_err(u, v) < RTOL and rel_err(u, w) < 1e-7
    model.train()
    results = {}
    for impl in (second, first):  # and in training, gradients included
        model.set_impl(impl)
        torch.manual_seed(5)  # the same stochastic-depth draws
        results[impl] = run(model, x)
    (o2, x2, g2), (o1, x1, g1) = results[second], results[first]
    assert all(rel_err(u, v) < F32_RTOL for u, v in zip(o2, o1))
    assert rel_err(x2, x1) < F32_RTOL
    skip = bias_before_train_bn(model)
    assert all(rel_err(g2[n], g1[n]) < F32_RTOL for n in g1 if n not in skip)


def test_impl_choices():
    with pytest.raises(ValueError, match="impl must be one of"):
        ViT3('tiny', impl='fast')
    with pytest.raises(ValueError, match="impl must be one of"):
        ViT3('tiny').set_impl('triton')
    with pytest.warns(DeprecationWarning, match="impl='plain'"):
        model = ViT3('tiny', fast_path=False)
    assert {m.impl for m in _fused_modules(model)} == {'plain'}
    with pytest.warns(DeprecationWarning):
        model.set_fast_path(True)
    assert {m.impl for m in _fused_modules(model)} == {'auto'}


def test_dispatch_by_device_and_tool(monkeypatch):
    """``auto`` runs the fused kernels on CPU only; every setting runs the
    plain code under the tracers and exporters that cannot see custom ops."""
    block = ViT3('tiny').layers[0].blocks[0]
    stem = ViT3('tiny').patch_embed
    cpu, meta = torch.empty(1), torch.empty(1, device='meta')
    assert impl.fused_forward(block, cpu) is not None
    assert impl.fused_forward(block, meta) is None  # auto: not measured there
    block.impl = stem.impl = 'fused'
    assert impl.fused_forward(block, meta) is not None  # any device
    assert impl.fused_forward(stem, meta) is None  # its kernels are CPU tuning
    for flag in ('is_tracing', 'is_scripting'):
        monkeypatch.setattr(torch.jit, flag, lambda: True)
        assert impl.fused_forward(block, cpu) is None
        monkeypatch.undo()
    monkeypatch.setattr(torch.compiler, 'is_exporting', lambda: True)
    assert impl.fused_forward(block, cpu) is None


@pytest.mark.parametrize('batch,hw', [(1, (41, 59)), (2, (24, 30))])
def test_inference_with_folded_batchnorm_equals_plain(batch, hw):
    """Without autograd the fused stem and merging fold eval-mode
    BatchNorms into the convolutions before them: same results as the plain
    model with non-trivial running statistics."""
    torch.manual_seed(0)
    plain = ViT3('tiny', impl='plain').double().eval()
    gen = torch.Generator().manual_seed(1)
    for m in plain.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(c, generator=gen))
            m.bias.data.copy_(torch.randn(c, generator=gen))
    fast = ViT3('tiny', impl='fused').double().eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(batch, 3, *hw, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(fast(x), plain(x)):
            assert rel_err(a, b) < 1e-10
        for a, b in zip(fast.float()(x.float()), plain.float()(x.float())):
            assert rel_err(a, b) < RTOL


def _op_samples():
    """Small float64 inputs of every fused op (requiring grad)."""
    gen = torch.Generator().manual_seed(0)

    def t(*shape, scale=1.):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    b, h, w = 2, 3, 4
    for heads, d, rope in ((2, 32, True), (1, 64, False)):
        c = heads * d
        yield 'ttt_inner', (t(b, h * w, 3 * c + 3 * d), t(1, heads, d, d, scale=.1),
                            t(1, heads, d, d, scale=.1), t(d, 1, 3, 3, scale=.1), h, w, heads,
                            1 / 3, 1., rope)
    yield 'mlp_tail', (t(b, h * w, 16), t(16, 1, 3, 3), t(16), t(8, 16, scale=.3), t(8), h, w)
    yield 'layer_norm_linear', (t(b, h * w, 16), t(16), t(16), 1e-5, t(8, 16), t(8))
    # the CPE; the patch merging's depth-wise convolution, with its ReLU
    for stride, bias, relu in ((1, True, False), (2, True, True), (2, False, True)):
        yield 'dwconv2d', (t(b, 6, 7, 9), t(6, 1, 3, 3), t(6) if bias else None, stride, 1,
                           relu)
    for kernel, stride, padding in ((3, 2, 1), (3, 1, 1), (1, 1, 0)):
        for bias, relu in ((True, False), (False, True)):
            yield 'conv2d_cpu', (t(b, 6, 7, 9), t(5, 6, kernel, kernel),
                                 t(5) if bias else None, stride, padding, relu)


@pytest.mark.parametrize('name,args', list(_op_samples()),
                         ids=lambda v: v if isinstance(v, str) else '')
def test_fused_ops_gradcheck_and_opcheck(name, args):
    """Each op's registered gradient, checked numerically, and its schema,
    shape function (what torch.compile sees) and autograd registration by
    torch.library.opcheck."""
    import mmvit3.kernels  # noqa: F401  (defines the ops)
    op = getattr(torch.ops.mmvit3, name)
    tensors = [i for i, a in enumerate(args) if torch.is_tensor(a)]

    def first_output(*ts):
        full = list(args)
        for i, v in zip(tensors, ts):
            full[i] = v
        out = op(*full)
        return out[0] if isinstance(out, (tuple, list)) else out

    assert torch.autograd.gradcheck(first_output, [args[i] for i in tensors], eps=1e-6,
                                    atol=1e-6, fast_mode=True)
    torch.library.opcheck(op, args, test_utils=('test_schema', 'test_autograd_registration',
                                                'test_faketensor'))


@pytest.mark.parametrize('impl', ['plain', 'fused'])
@pytest.mark.parametrize('part', ['stem', 'merging'])
def test_batch_one_gradients_checked_numerically(impl, part):
    """Stem and patch merging at batch 1, where torch's CPU BatchNorm
    backward goes wrong for some gradient layouts (see grid_to_tokens):
    both implementations checked against finite differences."""
    torch.manual_seed(0)
    if part == 'stem':
        module, shape, call = ConvStem(3, 16, impl=impl), (1, 3, 16, 20), lambda m, t: m(t)
    else:
        module = PatchMerging(8, 16, impl=impl)
        shape, call = (1, 5 * 7, 8), lambda m, t: m(t, (5, 7))
    module = module.double().train()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(call(module, x)[0].shape, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: (call(module, t)[0] * w).sum(), (x, ),
                                    eps=1e-6, atol=1e-5, rtol=1e-4)
