"""What the ecosystem's tools see of the default backbone (``impl='auto'``):
mmengine's and mmdet's stock FLOP counters, ONNX export with dynamic height
and width (run in onnxruntime), ``torch.export``, a saved jit trace, and
``torch.compile`` (inference and a training step) seeing the fused kernels.

Exporting and compiling take a while on 2 cores, so most checks use a small
custom arch (same modules, fewer and narrower blocks)."""
import re

import numpy as np
import pytest
import torch
from _helpers import DET_CFG, ROOT, det_data_overrides, run_tool

import mmvit3  # noqa: F401  (registers ViT3, defines the fused ops)
from mmvit3 import ViT3
from mmvit3.analysis import analyze_config

SMALL = dict(arch=dict(embed_dims=[32, 64, 96, 128], depths=[1, 1, 1, 1]), drop_path_rate=0.)
SIZES = [(224, 224), (237, 341), (512, 768)]


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def small_model(**kwargs):
    torch.manual_seed(0)
    return ViT3(**{**SMALL, **kwargs}).eval()


def test_stock_complexity_info_counts_the_paper_figure():
    """mmengine's get_model_complexity_info on ViT3('tiny') at 224x224:
    the paper's 4.92 GFLOPs, whatever the implementation setting."""
    from mmengine.analysis import get_model_complexity_info
    x = torch.rand(1, 3, 224, 224)
    counts = {impl: get_model_complexity_info(ViT3('tiny', impl=impl), inputs=(x, ),
                                              show_table=False, show_arch=False)['flops']
              for impl in ('auto', 'fused', 'plain')}
    assert counts['auto'] == counts['fused'] == counts['plain']
    assert abs(counts['auto'] - 4.92e9) < 0.005 * 4.92e9, counts


def test_mmdet_stock_get_flops_agrees_with_the_tool(demo_root):
    """mmdet's own tools/analysis_tools/get_flops.py (on a validation image
    of the demo data) counts what mmvit3's get_flops counts at that size."""
    import mmdet
    stock = f'{mmdet.__path__[0]}/.mim/tools/analysis_tools/get_flops.py'
    status, out = run_tool(stock, DET_CFG, '--num-images', '1', '--cfg-options',
                           *det_data_overrides(demo_root))
    assert status == 0, out[-3000:]
    flops = re.search(r'Flops: ([\d.]+)([GM])', out)
    shape = re.search(r'Input shape: \((\d+), (\d+)\)', out)
    assert flops and shape, out[-3000:]
    stock_flops = float(flops.group(1)) * (1e9 if flops.group(2) == 'G' else 1e6)
    ours = analyze_config(str(DET_CFG), (int(shape.group(1)), int(shape.group(2)))).flops
    assert abs(ours - stock_flops) <= 0.006 * ours, (ours, out[-1500:])


def test_onnx_export_with_dynamic_height_and_width(tmp_path):
    """torch.onnx.export (the dynamo exporter) of the default backbone: one
    file runs in onnxruntime at several sizes and matches PyTorch."""
    pytest.importorskip('onnxscript')
    ort = pytest.importorskip('onnxruntime')
    from mmvit3.deploy import export_onnx
    doc = (ROOT / 'docs' / 'export.md').read_text()
    claimed = float(re.search(r'onnxruntime it matches PyTorch within (\S+)', doc)[1])
    sizes = re.search(r'value\) at (\d+)×(\d+), (\d+)×(\d+) and (\d+)×(\d+)', doc)
    assert [tuple(map(int, sizes.groups()[i:i + 2])) for i in (0, 2, 4)] == SIZES
    model = small_model()
    path = export_onnx(model, tmp_path / 'vit3.onnx')
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    name = sess.get_inputs()[0].name
    for hw in SIZES:
        x = torch.rand(1, 3, *hw)
        outs = sess.run(None, {name: x.numpy()})
        with torch.no_grad():
            ref = model(x)
        assert [o.shape for o in outs] == [tuple(r.shape) for r in ref]
        for o, r in zip(outs, ref):
            assert rel(o, r.numpy()) < claimed, hw


def test_torch_export_with_dynamic_height_and_width():
    from mmvit3.deploy import dynamic_hw
    model = small_model()
    with torch.no_grad():
        program = torch.export.export(model, (torch.rand(1, 3, 224, 224), ),
                                      dynamic_shapes=dynamic_hw())
        x = torch.rand(1, 3, 237, 341)
        for o, r in zip(program.module()(x), model(x)):
            assert rel(o, r) < 1e-5


def test_jit_trace_runs_the_plain_modules_and_saves(tmp_path):
    model = small_model()
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x, ), check_trace=False)
        traced.save(str(tmp_path / 'vit3.pt'))
        loaded = torch.jit.load(str(tmp_path / 'vit3.pt'))
        assert 'mmvit3::' not in str(loaded.inlined_graph)  # no custom op
        for o, r in zip(loaded(x), model(x)):
            assert rel(o, r) < 1e-5


def _ops_seen_by_dynamo(model, *args):
    seen = set()

    def backend(gm, example_inputs):
        seen.update(str(node.target) for node in gm.graph.nodes if node.op == 'call_function')
        return gm.forward

    torch._dynamo.reset()
    torch.compile(model, backend=backend)(*args)
    return seen


def test_torch_compile_sees_the_fused_kernels():
    """Under torch.compile the default backbone (on CPU) runs the fused
    custom ops, with no graph break; inductor's result equals eager's, in
    inference and in a training step (gradients too)."""
    model = small_model()
    x = torch.rand(1, 3, 96, 128)
    for train in (False, True):
        assert torch._dynamo.explain(model.train(train))(x).graph_break_count == 0
    model.eval()
    with torch.no_grad():
        ops = _ops_seen_by_dynamo(model, x)
    assert {'mmvit3.ttt_inner', 'mmvit3.mlp_tail', 'mmvit3.layer_norm_linear',
            'mmvit3.conv2d_cpu', 'mmvit3.dwconv2d'} <= ops, ops
    # no grouped convolution left to inductor (it would copy each channels-last
    # map to NCHW first), nor a ReLU before one (it would save boolean masks)
    assert not {o for o in ops if 'convolution' in o or 'relu' in o}, ops
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with torch.no_grad():
        for o, r in zip(compiled(x), model(x)):
            assert rel(o, r) < 1e-4

    model.train()
    weights = [torch.randn(o.shape) for o in model(x)]

    def step(fn):
        model.zero_grad(set_to_none=True)
        loss = sum((o * w).sum() for o, w in zip(fn(x), weights))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = step(torch.compile(model))
    ref_loss, ref_grads = step(model)
    assert rel(loss, ref_loss) < 1e-4
    # conv biases right before a training BatchNorm have an exact gradient of 0
    zero = {f'{n}.conv.bias' for n, m in model.named_modules()
            if isinstance(getattr(m, 'norm', None), torch.nn.BatchNorm2d)
            and getattr(m.conv, 'bias', None) is not None}
    for name, g in ref_grads.items():
        if name not in zero:
            assert rel(grads[name], g) < 1e-4, name
        # the parameter's own strides, as DDP's gradient buckets need
        assert grads[name].stride() == dict(model.named_parameters())[name].stride(), name
