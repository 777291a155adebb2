"""Golden outputs: ViT3 and PlainViT3 against numbers from the authors' code.

``tests/data/golden_outputs.pt`` was computed once with the authors' release
(LeapLabTHU/ViTTT, commit e3477587d099e6b9e83e9e7c80b1b999e0989a20): their
H-ViT³ detection backbone (``vittt_tiny`` of
``detection/mmdet/models/backbones/vittt.py``) and their plain ViT³
classifier (``vittt_tiny`` of ``vittt/models/vittt.py``, built with
``img_size=96``), both in eval mode with drop path 0, every state-dict entry
set by :func:`golden_weight` below, run on :func:`golden_image`. Left as
built were only their ``rope.rotations`` buffers (fixed 224x224 tables that
their forward never reads; ours has none) and the BatchNorms'
``num_batches_tracked``. Their code is not needed to run these tests.

The file holds, besides strings saying what each entry is:

* ``h_vit3/<H>x<W>/out<i>``: the four normed stage maps of H-ViT³-T for a
  64x96 input (grids 16x24 down to 2x3) and a 34x50 one (the stem pads it to
  36x52; grids 9x13, 5x7, 3x4, 2x2, so every downsampling pads an odd
  side);
* ``plain/<H>x<W>/last_block`` and ``plain/<H>x<W>/norm``: plain ViT³-T's
  tokens after the last block and after the final ``norm`` for a 96x96 input,
  reshaped row-major to ``(1, 192, 6, 6)`` maps (their classifier needs a
  square token grid). The released classifier has no position embedding and
  no class token; its only entries ours lacks are the ``head.*`` classifier's.

The authors' H-ViT³ mixer sets ``self.scale = 1/3`` in the middle of its
forward, after the step of inner module 1, which reads ``self.scale``
(``32 ** -0.5`` as built) too: only on each mixer's first call is inner
module 1's loss scaled by ``32 ** -0.5``. The stored maps come from a second
forward of their model, so both inner losses are scaled by 1/3, as in all
their training steps but the first, and as ours always is. Their plain
classifier uses 1/3 from the start.

Each test fills our model's state dict by the same rule (our names equal
theirs) and compares, with the plain modules and with the fused kernels.
"""
import math
import zlib
from pathlib import Path

import pytest
import torch

from mmvit3 import PlainViT3, ViT3

GOLDEN_FILE = Path(__file__).parent / 'data' / 'golden_outputs.pt'
#: Largest difference allowed, relative to the largest magnitude of the
#: stored map. Measured: at most 1.7e-6 (H-ViT³ out3 of the 34x50 input; the
#: plain model's maps 5e-7), the same with the plain modules and with the
#: fused kernels: float32 rounding, 12 to 17 blocks deep.
RTOL_OF_MAX = 1e-5


def hash_uniform(name: str, numel: int) -> torch.Tensor:
    """``numel`` numbers in [-1, 1), a function of ``name`` and the index
    only: entry ``i`` hashes the 32-bit integer ``i + crc32(name)`` (mod
    2**32) with the integer hash ``x ^= x >> 16; x *= 0x45d9f3b; x ^= x >>
    16; x *= 0x45d9f3b; x ^= x >> 16`` (products mod 2**32), then maps it to
    ``x / 2**31 - 1``. Exact integer arithmetic: the same on every machine."""
    x = (torch.arange(numel, dtype=torch.int64) + zlib.crc32(name.encode())) & 0xFFFFFFFF
    for _ in range(2):
        x = ((x >> 16) ^ x) * 0x45D9F3B & 0xFFFFFFFF
    x = (x >> 16) ^ x
    return x.double() / 2.0**31 - 1.0


def golden_weight(name: str, shape) -> torch.Tensor:
    """The value of state-dict entry ``name`` of ``shape``, from ``r =
    hash_uniform(name, numel)`` in row-major order:

    * entries of a norm (a module whose name starts with ``norm``: the
      LayerNorms and the BatchNorms): ``weight = 1 + 0.1 r``,
      ``running_var = 1 + 0.1 |r|``, ``bias`` and ``running_mean = 0.02 r``;
    * the TTT inner weights ``attn.w1``, ``attn.w2``, ``attn.w3``: ``0.02 r``;
    * other entries of two or more dimensions (linear and convolution
      weights): ``r * sqrt(3 / fan_in)``, ``fan_in`` the product of all but
      the first dimension (unit variance gain);
    * other one-dimensional entries (biases): ``0.02 r``.

    Computed in float64, returned as float32."""
    shape = tuple(shape)
    r = hash_uniform(name, math.prod(shape)).reshape(shape)
    module, _, leaf = name.rpartition('.')
    if module.rpartition('.')[2].startswith('norm'):
        if leaf == 'weight':
            value = 1 + 0.1 * r
        elif leaf == 'running_var':
            value = 1 + 0.1 * r.abs()
        else:
            value = 0.02 * r
    elif leaf in ('w1', 'w2', 'w3'):
        value = 0.02 * r
    elif len(shape) >= 2:
        value = r * math.sqrt(3 / math.prod(shape[1:]))
    else:
        value = 0.02 * r
    return value.float()


def golden_image(height: int, width: int) -> torch.Tensor:
    """The input, ``(1, 3, height, width)``: at channel ``c``, row ``i``,
    column ``j``, ``sin(0.3 i + 1.7 c) cos(0.2 j - 0.9 c) + 0.1 sin(0.5 (i +
    j))``, computed in float64, returned as float32."""
    c, i, j = torch.meshgrid(torch.arange(3, dtype=torch.float64),
                             torch.arange(height, dtype=torch.float64),
                             torch.arange(width, dtype=torch.float64),
                             indexing='ij')
    image = (torch.sin(0.3 * i + 1.7 * c) * torch.cos(0.2 * j - 0.9 * c) +
             0.1 * torch.sin(0.5 * (i + j)))
    return image.unsqueeze(0).float()


def fill_golden_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Every state-dict entry of ``model`` set by :func:`golden_weight`
    (``num_batches_tracked`` left alone)."""
    state = {name: value if name.endswith('num_batches_tracked') else
             golden_weight(name, value.shape)
             for name, value in model.state_dict().items()}
    model.load_state_dict(state)
    return model


@pytest.fixture(scope='module')
def golden():
    return torch.load(GOLDEN_FILE, weights_only=True)


def assert_close_to_golden(out: torch.Tensor, expected: torch.Tensor, what: str):
    assert out.shape == expected.shape, what
    scale = expected.abs().max().item()
    diff = (out - expected).abs().max().item()
    assert diff <= RTOL_OF_MAX * scale, (
        f'{what}: max |diff| {diff:.3g}, largest |value| {scale:.3g}')


@pytest.mark.parametrize('impl', ['plain', 'fused'])
def test_h_vit3_tiny_matches_the_authors_release(golden, impl):
    model = fill_golden_weights(ViT3(arch='tiny', drop_path_rate=0.)).eval()
    model.set_impl(impl)
    for height, width in golden['h_vit3/sizes'].tolist():
        with torch.no_grad():
            outs = model(golden_image(height, width))
        assert len(outs) == 4
        for i, out in enumerate(outs):
            key = f'h_vit3/{height}x{width}/out{i}'
            assert_close_to_golden(out, golden[key], f'{impl} {key}')


@pytest.mark.parametrize('impl', ['plain', 'fused'])
def test_plain_vit3_tiny_matches_the_authors_release(golden, impl):
    model = PlainViT3(arch='tiny', drop_path_rate=0., out_indices=(-1, ))
    model = fill_golden_weights(model).eval()
    model.set_impl(impl)
    height, width = golden['plain/size'].tolist()
    last_block = []
    handle = model.blocks[-1].register_forward_hook(
        lambda module, args, out: last_block.append(out))
    try:
        with torch.no_grad():
            out, = model(golden_image(height, width))
    finally:
        handle.remove()
    prefix = f'plain/{height}x{width}'
    assert_close_to_golden(out, golden[f'{prefix}/norm'], f'{impl} {prefix}/norm')
    tokens, = last_block  # (1, N, C), row-major over the token grid
    grid = tokens.transpose(1, 2).reshape(out.shape)
    assert_close_to_golden(grid, golden[f'{prefix}/last_block'],
                           f'{impl} {prefix}/last_block')
