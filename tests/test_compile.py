"""``compile=True`` in a config trains at changing sizes: the backbone and
neck compiled for training (mmvit3.engine.CompileHook), one graph per input
size, the rest of the step eager. Inductor compiles on the CPU, so the
models are small."""
import re
import subprocess
import sys

import pytest
import torch

from _helpers import ROOT, DET_CFG, det_data_overrides, short_run_overrides, tool_env
from mmvit3.engine import compile_for_training
from mmvit3.models import PlainViT3, ViT3

SMALL_ARCH = dict(embed_dims=[32, 64, 96, 128], depths=[1, 1, 1, 1])
SIZES = ((96, 96), (128, 128), (160, 160))


def test_compile_in_a_config_trains_the_demo_detector_at_three_sizes_one_graph_per_size(
        demo_root, tmp_path):
    """tools/train.py with ``compile`` in the config and a multi-scale pipeline (three
    scales, one image per batch): every iteration runs, the backbone and the
    neck are compiled once per size (dynamo's own recompile log agrees) and
    the loss stays finite. mmengine alone compiles the whole train_step,
    which fails inside the optimizer step at the first iteration (in dynamo,
    whatever the backend)."""
    config = tmp_path / 'small_demo.py'
    config.write_text(
        f"_base_ = '{ROOT / DET_CFG}'\n"
        f"model = dict(backbone=dict(arch=dict(_delete_=True, **{SMALL_ARCH!r})),\n"
        f"             neck=dict(in_channels={SMALL_ARCH['embed_dims']!r}))\n"
        # Inductor compiles for minutes on two cores: the benchmark runs it
        "compile = dict(backend='aot_eager')\n")
    scales = '[' + ','.join(f'({w},{h})' for h, w in SIZES) + ']'
    args = [
        'tools/train.py', str(config), '--work-dir', str(tmp_path / 'run'), '--cfg-options',
        *det_data_overrides(demo_root), *short_run_overrides(),
        'train_cfg.max_iters=9', 'train_cfg.val_interval=100',
        'train_dataloader.batch_size=1',
        'train_dataloader.dataset.pipeline.2.type=RandomChoiceResize',
        f'train_dataloader.dataset.pipeline.2.scales={scales}',
    ]
    # a process of its own: TORCH_LOGS is read when torch is imported
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, text=True,
                          env=tool_env(TORCH_LOGS='recompiles'),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    assert 'compile: backbone and neck compiled for training' in out
    for part in ('ViT3', 'FPN'):
        compiled = set(re.findall(rf'compile: {part} for input size (\S+)', out))
        assert len(compiled) == 3, (part, compiled)
    assert {s.split('x', 2)[2] for s in re.findall(r'compile: ViT3 for input size (\S+)', out)
            } == {f'{h}x{w}' for h, w in SIZES}
    # dynamo: a first compile and two recompiles for each of the two parts
    assert len(re.findall(r'Recompiling function forward', out)) == 4, out[-3000:]
    iters = re.findall(r'Iter\(train\) \[\s*(\d+)/9\].*? loss: ([\d.naif]+)', out)
    assert [int(i) for i, _ in iters] == list(range(1, 10))
    assert all(torch.isfinite(torch.tensor(float(loss))) for _, loss in iters)


@pytest.mark.parametrize('make', [
    lambda: ViT3(arch=SMALL_ARCH, impl='plain', drop_path_rate=0.),
    lambda: PlainViT3(arch=dict(embed_dims=64, depth=2, num_heads=2), out_indices=(0, 1), impl="plain",
                      drop_path_rate=0.),
    lambda: PlainViT3(arch=dict(embed_dims=64, depth=2, num_heads=2), out_indices=(0, 1), drop_path_rate=0.),
], ids=['ViT3-plain', 'PlainViT3-plain', 'PlainViT3-default'])
def test_backbone_compiled_for_training_matches_eager_at_three_sizes(make):
    """compile_for_training on the plain path of both backbones (and the
    default path of the plain one; the detector test runs H-ViT³'s): three
    training sizes, each compiled once, outputs and gradients as eager;
    in eval mode the model runs eager (no new graph)."""
    torch.manual_seed(0)
    model = make().train()
    reference = make().train()
    reference.load_state_dict(model.state_dict())
    torch._dynamo.reset()
    graphs = []
    aot_eager = torch._dynamo.lookup_backend('aot_eager')

    def backend(gm, example_inputs):
        graphs.append(tuple(example_inputs[0].shape) if example_inputs else ())
        return aot_eager(gm, example_inputs)

    compile_for_training(model, dict(backend=backend), max_sizes=8)
    for h, w in SIZES + SIZES[:1]:
        x = torch.randn(1, 3, h, w)
        outs, ref = model(x), reference(x)
        sum(o.square().mean() for o in outs).backward()
        sum(o.square().mean() for o in ref).backward()
        for o, r in zip(outs, ref):
            torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4, msg=name)
    assert len(graphs) == 3, graphs
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert len(graphs) == 3, 'eval mode compiled a graph'
