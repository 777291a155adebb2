"""On a CUDA GPU (skipped elsewhere; ``bash tools/gpu_check.sh`` runs these
and the GPU benchmark): both backbones' fused and plain implementations
agree in float32, forward and backward, and stay finite under bfloat16 /
float16 autocast. Needs torch, mmengine and mmcv(-lite) only."""
import pytest
import torch

from mmvit3 import PlainViT3, ViT3

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
BACKBONES = {'ViT3': lambda impl: ViT3('tiny', impl=impl, drop_path_rate=0.),
             'PlainViT3': lambda impl: PlainViT3('tiny', impl=impl, drop_path_rate=0.)}


def step(model, x, dtype):
    model.zero_grad(set_to_none=True)
    with torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32):
        outs = model(x)
    loss = sum((o.float() ** 2).mean() for o in outs)
    loss.backward()
    return [o.float() for o in outs], {n: p.grad.float() for n, p in model.named_parameters()}


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize('name', list(BACKBONES))
def test_fused_equals_plain_on_cuda(name):
    torch.manual_seed(0)
    plain = BACKBONES[name]('plain').cuda().train()
    fused = BACKBONES[name]('fused').cuda().train()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 96, 160, device='cuda')
    (po, pg), (fo, fg) = step(plain, x, torch.float32), step(fused, x, torch.float32)
    assert all(rel(f, p) < 1e-4 for f, p in zip(fo, po))
    assert all(rel(fg[n], pg[n]) < 1e-3 for n in pg if pg[n].norm() > 0)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('impl', ['auto', 'plain', 'fused'])
@pytest.mark.parametrize('name', list(BACKBONES))
def test_half_precision_autocast_stays_finite_on_cuda(name, impl, dtype):
    torch.manual_seed(0)
    model = BACKBONES[name](impl).cuda().train()
    outs, grads = step(model, torch.randn(2, 3, 96, 160, device='cuda'), dtype)
    assert all(torch.isfinite(o).all() for o in outs)
    assert all(torch.isfinite(g).all() for g in grads.values())
