"""Ready for CUDA without a GPU: both backbones and the simple pyramid run
forward and backward on the ``meta`` device (a stand-in for any device but
the CPU) through ``impl='auto'`` and ``'fused'``, and the operations they
record show that no CPU-only kernel is picked for a non-CPU tensor: with
``'auto'`` none of mmvit3's ops at all (the fused kernels are measured on
CPU only), with ``'fused'`` only the device-independent block ops."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmvit3 import PlainViT3, SimpleFPN, ViT3

CPU_ONLY = {'mmvit3.conv2d_cpu', 'mmvit3.conv2d_cpu_backward'}


class RecordOps(TorchDispatchMode):
    """The names of the operators dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def models():
    return {
        'ViT3': lambda impl: ViT3('tiny', impl=impl),
        'PlainViT3 + SimpleFPN': lambda impl: torch.nn.Sequential(
            PlainViT3('tiny', impl=impl),
            SimpleFPN(192, [48, 96, 192, 192], 32, num_outs=5)),
    }


@pytest.mark.parametrize('impl', ['auto', 'fused'])
@pytest.mark.parametrize('name', list(models()))
def test_forward_and_backward_on_another_device_pick_no_cpu_only_op(name, impl):
    with torch.device('meta'):
        model = models()[name](impl).train()
    x = torch.randn(2, 3, 64, 96, device='meta', requires_grad=True)
    with RecordOps() as record:
        outs = model(x)
        sum(o.float().sum() for o in outs).backward()
    assert all(o.device.type == 'meta' for o in outs)
    assert x.grad is not None and x.grad.shape == x.shape
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    ours = {op for op in record.ops if op.startswith('mmvit3.')}
    assert not ours & CPU_ONLY, ours
    if impl == 'auto':
        assert not ours, ours  # the plain modules, as on CUDA
    else:
        assert 'mmvit3.ttt_inner' in ours and 'mmvit3.ttt_inner_backward' in ours, ours


def test_the_check_would_see_a_cpu_only_op():
    """The recorder is not blind: on the CPU the default runs the CPU-only
    convolutions of the stem (what the test above finds absent)."""
    model = ViT3('tiny', impl='auto').eval()
    with RecordOps() as record, torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    assert 'mmvit3.conv2d_cpu' in record.ops
