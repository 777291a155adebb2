"""The TTT mixer (docs/model.md): closed-form inner gradients, RoPE, shapes."""
import math

import pytest
import torch

from mmvit3.kernels.rope import apply_rope_2d, rope_2d_cos_sin
from mmvit3.models.ttt import (TTTMixer, dwconv3x3_per_sample,
                               inner_train_dwconv, inner_train_swiglu,
                               normalize_columns,
                               swiglu_apply)

S = 1 / 3


@pytest.mark.parametrize('batch,heads,tokens', [(1, 2, 35), (2, 3, 7)])
def test_swiglu_closed_form_equals_autograd(batch, heads, tokens):
    torch.manual_seed(0)
    d = 32
    w1 = torch.randn(1, heads, d, d, dtype=torch.float64) * 0.1
    w2 = torch.randn(1, heads, d, d, dtype=torch.float64) * 0.1
    k = torch.randn(batch, heads, tokens, d, dtype=torch.float64)
    v = torch.randn(batch, heads, tokens, d, dtype=torch.float64)
    # L1 = -(s/N) sum_n <f(k_n), v_n>, per sample and head (summing over
    # samples and heads keeps each one's gradient apart).
    w1_b = w1.expand(batch, -1, -1, -1).clone().requires_grad_()
    w2_b = w2.expand(batch, -1, -1, -1).clone().requires_grad_()
    loss = -(S / tokens) * (swiglu_apply(k, w1_b, w2_b) * v).sum()
    g1, g2 = torch.autograd.grad(loss, [w1_b, w2_b])

    new1, new2 = inner_train_swiglu(w1, w2, k, v, scale=S, lr=1.0)
    torch.testing.assert_close(new1, w1 - normalize_columns(g1), rtol=0, atol=1e-12)
    torch.testing.assert_close(new2, w2 - normalize_columns(g2), rtol=0, atol=1e-12)
    # the normalisation: column o divided by (its 2-norm over inputs + 1)
    col = g1[0, 0, :, 5]
    torch.testing.assert_close(normalize_columns(g1)[0, 0, :, 5], col / (col.norm() + 1))


@pytest.mark.parametrize('hw', [(5, 7), (1, 1), (4, 9)])
def test_dwconv_closed_form_equals_autograd(hw):
    torch.manual_seed(1)
    batch, c = 2, 32
    h, w = hw
    w3 = torch.randn(c, 1, 3, 3, dtype=torch.float64) * 0.1
    k = torch.randn(batch, c, h, w, dtype=torch.float64)
    v = torch.randn(batch, c, h, w, dtype=torch.float64)
    w3_b = w3.reshape(1, c, 3, 3).expand(batch, -1, -1, -1).clone().requires_grad_()
    loss = -(S / (h * w)) * (dwconv3x3_per_sample(k, w3_b) * v).sum()
    g3, = torch.autograd.grad(loss, [w3_b])
    expected = w3.reshape(1, c, 3, 3) - g3 / (g3.flatten(2).norm(dim=-1)[..., None, None] + 1)
    torch.testing.assert_close(inner_train_dwconv(w3, k, v, scale=S, lr=1.0), expected,
                               rtol=0, atol=1e-12)


def test_per_sample_dwconv_uses_each_samples_kernel():
    torch.manual_seed(2)
    x = torch.randn(2, 4, 6, 5)
    weight = torch.randn(2, 4, 3, 3)
    out = dwconv3x3_per_sample(x, weight)
    for b in range(2):
        ref = torch.nn.functional.conv2d(x[b:b + 1], weight[b].unsqueeze(1), padding=1, groups=4)
        torch.testing.assert_close(out[b:b + 1], ref)


def test_rope_matches_spec_formula():
    h, w, c = 3, 5, 64
    k_max = c // 4
    x = torch.randn(2, h * w, c, dtype=torch.float64)
    cos, sin = rope_2d_cos_sin((h, w), c)
    out = apply_rope_2d(x, cos.double(), sin.double())
    for y in range(h):
        for xx in range(w):
            n = y * w + xx
            for j in range(c // 2):
                theta = 10000 ** (-(j % k_max) / k_max)
                a = (y if j < k_max else xx) * theta
                u, v = x[:, n, 2 * j], x[:, n, 2 * j + 1]
                torch.testing.assert_close(out[:, n, 2 * j], u * math.cos(a) - v * math.sin(a),
                                           rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(out[:, n, 2 * j + 1], v * math.cos(a) + u * math.sin(a),
                                           rtol=1e-5, atol=1e-5)
    # a rotation keeps each pair's length
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))


def test_mixer_shapes_and_no_fixed_size_state():
    mixer = TTTMixer(64)
    assert mixer.qkv.weight.shape == (3 * 64 + 3 * 32, 64)
    assert mixer.proj.weight.shape == (64, 96)
    assert mixer.w1.shape == mixer.w2.shape == (1, 2, 32, 32)
    assert mixer.w3.shape == (32, 1, 3, 3)
    assert not list(mixer.buffers())  # RoPE is computed per input size
    for hw in [(1, 1), (3, 7), (9, 4)]:
        x = torch.randn(2, hw[0] * hw[1], 64)
        assert mixer(x, hw).shape == x.shape


def test_mixer_rejects_width_not_multiple_of_head_dim():
    with pytest.raises(ValueError, match='multiple of head_dim'):
        TTTMixer(48)


def test_mixer_is_per_sample():
    """The inner step is taken per image: a sample's output does not depend
    on the other samples of the batch."""
    torch.manual_seed(3)
    mixer = TTTMixer(64).eval()
    x = torch.randn(2, 12, 64)
    both = mixer(x, (3, 4))
    torch.testing.assert_close(both[1:], mixer(x[1:], (3, 4)), rtol=1e-5, atol=1e-6)
