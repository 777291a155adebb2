"""mmvit3.benchmark (tools/benchmark.py, tools/gpu_benchmark.py):
measurements in their own processes, the report (table, goal ratios, plot)
and bad arguments. Speed itself is measured by running the tools, never
asserted here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import page_command

from mmvit3 import benchmark
from mmvit3 import tuning as malloc
from mmvit3.kernels import linear_cpu
from mmvit3.cli.benchmark import parse_args

ROOT = Path(__file__).resolve().parents[1]


def result(model, mode, size, seconds, peak, level='backbone'):
    return dict(model=model, level=level, mode=mode, size=list(size), batch=1, amp=False,
                params=1e6, seconds=seconds, images_per_s=1 / seconds, peak_gib=peak,
                base_gib=0.5, step_gib=peak - 0.5)


def test_goal_ratios_from_results():
    ref, big = benchmark.REF_SIZE, benchmark.BIG_SIZE
    results = [
        result('vit3-t', 'infer', ref, 1.0, 1.0), result('swin-t', 'infer', ref, 1.25, 1.2),
        result('vit3-t', 'train', ref, 3.0, 3.0), result('swin-t', 'train', ref, 2.0, 3.5),
        result('vit3-t-plain', 'train', ref, 4.5, 6.0),
        result('vit3-t', 'train', big, 12.6, 11.0),
        dict(model='vit3-t-plain', level='backbone', mode='infer', size=list(ref),
             batch=1, amp=False, error='out of memory'),
    ]
    lines = {line.split(' | ')[0].lstrip('| '): line for line in benchmark.goals(results)}
    assert '| 0.80 | ≤ 0.85 | met |' in lines['backbone: ViT3-T / Swin-T, inference time']
    assert '| 1.50 | ≤ 1.1 | NOT met |' in lines['backbone: ViT3-T / Swin-T, training-step time']
    assert '| 0.86 | ≤ 1.0 | met |' in lines['backbone: ViT3-T / Swin-T, training-step peak memory']
    assert '| 1.50 | ≥ 1.3 | met |' in lines['backbone: plain / fast path, training-step time']
    assert '| 4.20 | ≤ 4.3 | met |' in lines['backbone: ViT3-T train, time 1600x2688 / 800x1344']
    assert '| 3.67 | ≤ 4.3 | met |' in \
        lines['backbone: ViT3-T train, peak memory 1600x2688 / 800x1344']
    # a goal whose measurements are missing or failed is not reported
    assert 'backbone: plain / fast path, inference time' not in lines
    assert not any(k.startswith('detector') for k in lines)

    machine = dict(date='d', cpu='cpu', cores=2, threads=2, memory_gib=24, torch='t',
                   device='cpu')
    text = benchmark.markdown(results, machine)
    assert '| backbone | H-ViT3-T (plain path) | infer | 800x1344 | | out of memory |' in text
    assert '| backbone | Swin-T | train | 800x1344 | 1.0M | 2.000 | 0.50 | 3.50 | 3.00 |' in text
    assert 'Goals' in text


def test_sizes_and_bad_arguments():
    assert benchmark.parse_size('512') == (512, 512)
    assert benchmark.parse_size('800x1344') == (800, 1344)
    for bad in ('0', 'x', '12x', '1x2x3', '-4'):
        with pytest.raises(Exception, match='size must be'):
            benchmark.parse_size(bad)
    with pytest.raises(SystemExit):
        parse_args(['--models', 'vit3-xl'])
    with pytest.raises(ValueError, match='single-scale'):
        benchmark.build('vit-s', 'detector')


def test_run_writes_table_plot_and_results(tmp_path, monkeypatch):
    """A real (tiny) run of the page's --breakdown command: each measurement
    in its own process, results as they come, then the table and the plot."""
    out = tmp_path / 'bench'
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    monkeypatch.delenv(malloc.ENV_VAR, raising=False)
    args = page_command(r'python tools/benchmark\.py --models vit3-t vit3-t-plain .* --breakdown ', {r'work_dirs/\S+': out})
    assert benchmark.run(parse_args([
        *args[1:], '--models', 'vit3-t', 'vit-s', '--sizes', '40x56', '--modes', 'train',
        '--warmup', '0', '--repeat', '1', '--rounds', '1', '--threads', '1'])) == 0
    rows = [json.loads(line) for line in (out / 'results.jsonl').read_text().splitlines()]
    assert [(r['model'], r['mode'], r['size']) for r in rows] == [
        ('vit3-t', 'train', [40, 56]), ('vit-s', 'train', [40, 56])]
    for r in rows:
        assert 'error' not in r, r
        assert r['seconds'] > 0 and r['peak_gib'] >= r['base_gib'] > 0
    assert rows[0]['params'] == 28_191_584  # H-ViT3-T's backbone
    # --breakdown: every part group timed, in the order they run
    assert list(rows[0]['parts']) == list(benchmark.PART_GROUPS)[:-2] + ['stage 4', 'out norms']
    assert list(rows[1]['parts']) == ['stem', 'stage 1', 'out norms']
    assert all(t > 0 for r in rows for t in r['parts'].values())
    # ... and on CPU the operators of a profiled step, sorted by what they compute
    for r in rows:
        ops = r['ops']
        assert ops['matrix products'] > 0 and ops['other'] > 0 and ops['gmac'] > 0
        assert ops['profiled'] == pytest.approx(
            sum(ops[k] for k in benchmark.OP_CLASSES))
    assert rows[0]['ops']['convolutions'] > 0  # ViT3's stem; ViT-S's patch embedding
    assert rows[1]['ops']['convolutions'] > 0
    table = (out / 'benchmark.md').read_text()
    assert 'H-ViT3-T' in table and 'ViT-S/16' in table and '40x56' in table
    assert 'Where the time goes' in table
    assert '| H-ViT3-T | train | 40x56 | ' in table.split('Where the time goes')[1]
    assert '| H-ViT3-T | train | 40x56 | ' in table.split('What the operators compute')[1]
    assert (out / 'benchmark.png').stat().st_size > 10_000
    machine = json.loads((out / 'machine.json').read_text())
    assert machine['threads'] == 1
    if malloc.malloc_tunable():  # what every measurement's process did, in the header
        assert machine['malloc'] == 'glibc malloc keeping freed memory (MMVIT3_MALLOC=keep)'
        assert machine['malloc'] in table
    # the CPU's features and torch's kernel choice beside every figure
    assert machine['isa'] == (' '.join(malloc.cpu_isa()) or 'unknown')
    assert f"ISA {machine['isa']} (torch's CPU kernels: {machine['torch_cpu_kernels']})" in table
    # ... and the tuning choices that follow from it
    native = {'avx512_bf16', 'amx'} & set(malloc.cpu_isa())
    assert f"tuning: {machine['tuning']}" in table
    assert ('bf16 computed natively' if native else 'bf16 emulated') in machine['tuning']


def test_a_tuning_choice_is_measured_both_ways_and_the_default_follows_the_cpu(
        tmp_path, monkeypatch):
    """--tunings: each forced choice runs in its own process, which reports
    the choice it ran with; the report sets each beside the default, and its
    header names what capped the ISA the libraries use."""
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX2')
    out = tmp_path / 'bench'
    assert benchmark.run(parse_args([
        '--models', 'vit3-t', '--sizes', '64x96', '--modes', 'train', '--tunings', 'auto',
        'linear=blas', '--warmup', '0', '--repeat', '1', '--threads', '1',
        '--out-dir', str(out)])) == 0
    rows = {r['tuning']: r for r in map(json.loads, (out / 'results.jsonl').read_text().splitlines())}
    assert rows['linear=blas']['choices']['linear'] == (
        'BLAS float32 matrix products (forced by MMVIT3_TUNING)')
    default = 'oneDNN' if linear_cpu.onednn_linear_default() else 'BLAS'
    assert rows['auto']['choices']['linear'].startswith(default)
    assert "torch's CPU kernels" in rows['auto']['choices']['linear']
    table = (out / 'benchmark.md').read_text()
    assert "(torch's CPU kernels: " in table and '), capped by ONEDNN_MAX_CPU_ISA=AVX2;' in table
    variants = table.split('Variants against')[1]
    assert '| backbone | H-ViT3-T [linear=blas] | train | 64x96 |' in variants
    with pytest.raises(SystemExit):
        parse_args(['--tunings', 'linear=fast'])


def test_cpu_isa_reads_the_flags(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('model name\t: X\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n')
    assert malloc.cpu_isa(str(info)) == ['avx2', 'avx512', 'avx512_bf16', 'amx']
    info.write_text('flags\t\t: fpu avx2\n')
    assert malloc.cpu_isa(str(info)) == ['avx2']
    assert malloc.cpu_isa(str(tmp_path / 'missing')) == []


def test_bad_malloc_setting_stops_before_measuring(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(malloc.ENV_VAR, 'tcmalloc')
    assert benchmark.run(parse_args(['--models', 'vit3-t', '--sizes', '40',
                                               '--out-dir', str(tmp_path)])) == 2
    assert 'MMVIT3_MALLOC must be' in capsys.readouterr().err
    assert not (tmp_path / 'results.jsonl').exists()


def test_rounds_take_the_median_time_and_the_largest_peak():
    """``--rounds``: one row per measurement, the median time over the
    rounds and the largest peak; a measurement failing in every round keeps
    its error."""
    rows = [dict(result('vit3-t', 'train', (800, 1344), t, peak), runs=1, step_gib=peak - 0.5)
            for t, peak in ((9.0, 3.0), (12.0, 3.1), (10.0, 3.05))]
    failed = [dict(result('swin-t', 'train', (800, 1344), 1.0, 1.0), error='out of memory')] * 2
    merged = benchmark.aggregate(rows + failed)
    assert len(merged) == 2
    vit3 = benchmark.find(merged, 'vit3-t', 'backbone', 'train', (800, 1344))
    assert vit3['seconds'] == 10.0 and vit3['peak_gib'] == 3.1
    assert vit3['rounds'] == 3 and vit3['runs'] == 3
    assert vit3['images_per_s'] == pytest.approx(0.1)
    assert merged[1]['error'] == 'out of memory'
    assert 'median over 3 rounds' in benchmark.markdown(merged, dict(
        date='d', cpu='c', cores=2, threads=2, memory_gib=24, torch='t', device='cpu'))
    mixed = merged + [dict(result('swin-t', 'infer', (800, 1344), 1.0, 1.0), runs=1)]
    assert 'median over 1-3 rounds' in benchmark.markdown(mixed, dict(
        date='d', cpu='c', cores=2, threads=2, memory_gib=24, torch='t', device='cpu'))
    with pytest.raises(SystemExit):
        parse_args(['--rounds', '0'])


@pytest.mark.parametrize('name', ['vit3-t', 'vit3-t-plain', 'swin-t', 'r50', 'vit-s'])
def test_breakdown_parts_cover_every_parameter_once(name):
    """The parts ``--breakdown`` times hold every parameter of the backbone's
    sub-modules, none twice, in the groups of ``PART_GROUPS`` (ViT-S's own
    position table is added between parts)."""
    model = benchmark.build(name, 'backbone')
    parts = benchmark.backbone_parts(name, model)
    seen = [id(p) for _, module, _ in parts for p in module.parameters()]
    assert len(seen) == len(set(seen))
    own = {id(p) for p in model.parameters(recurse=False)}
    assert set(seen) == {id(p) for p in model.parameters()} - own
    assert len(own) == (1 if name == 'vit-s' else 0)
    groups = [g for g, _, _ in parts]
    assert set(groups) <= set(benchmark.PART_GROUPS)
    assert groups == sorted(groups, key=benchmark.PART_GROUPS.index)  # the order they run
    with pytest.raises(ValueError, match='no breakdown'):
        benchmark.backbone_parts('alexnet', model)


def test_breakdown_table_takes_the_median_over_rounds():
    rows = [dict(result('vit3-t', 'train', (800, 1344), t, 3.0), runs=1,
                 parts=dict(stem=t / 10, **{'stage 1': t / 2}))
            for t in (9.0, 12.0, 10.0)]
    merged = benchmark.aggregate(rows)
    assert merged[0]['parts'] == {'stem': 1.0, 'stage 1': 5.0}
    lines = benchmark.breakdown_table(merged)
    assert lines[3] == '| model | mode | input | stem | stage 1 | rest | whole |'
    assert lines[5] == '| H-ViT3-T | train | 800x1344 | 1.000 | 5.000 | 4.000 | 10.000 |'
    assert benchmark.breakdown_table(rows[:0]) == []


def test_op_split_sorts_operators_and_counts_multiply_adds():
    """Each operator's self time counted once, in the class of its kernel;
    multiply-adds of every matrix-product call from its factors' shapes."""
    events = [
        ('aten::mm', 0.5, 2, [[4200, 320], [320, 1280]]),
        ('aten::addmm', 0.25, 1, [[1280], [4200, 320], [320, 1280], [], []]),
        ('aten::bmm', 0.125, 3, [[10, 4200, 32], [10, 32, 64]]),
        ('aten::baddbmm', 0.125, 1, [[2, 8, 16], [2, 8, 4], [2, 4, 16], [], []]),
        ('aten::mkldnn_convolution', 0.75, 4, [[1, 32, 400, 672], [32, 32, 3, 3]]),
        ('aten::convolution_backward', 1.0, 1, []),
        ('aten::gelu', 0.5, 9, [[1, 4200, 1280], []]),
        ('aten::mm', 0.25, 1, []),  # shapes not recorded: time counts, MACs do not
        # oneDNN's linear layer (the fused ops' choice on AVX-512): tokens, (out, in) weight
        ('mkldnn::_linear_pointwise', 0.5, 2, [[1, 4200, 320], [1280, 320], [1280], [], [], []]),
    ]
    split = benchmark.op_split(events)
    assert split['matrix products'] == 1.75
    assert split['convolutions'] == 1.75
    assert split['other'] == 0.5
    assert split['profiled'] == 4.0
    macs = 5 * 4200 * 320 * 1280 + 3 * 10 * 4200 * 32 * 64 + 2 * 8 * 4 * 16
    assert split['gmac'] == pytest.approx(macs / 1e9)
    assert benchmark.op_split([]) == {'matrix products': 0., 'convolutions': 0.,
                                      'other': 0., 'profiled': 0., 'gmac': 0.}


def test_ops_table_takes_the_median_over_rounds():
    rows = [dict(result('vit3-t', 'train', (800, 1344), t, 3.0), runs=1,
                 parts=dict(stem=t / 10),
                 ops={'matrix products': t / 2, 'convolutions': 1.0, 'other': t / 4,
                      'profiled': 0.75 * t + 1, 'gmac': 300.0})
            for t in (9.0, 12.0, 10.0)]
    merged = benchmark.aggregate(rows)
    assert merged[0]['ops']['matrix products'] == 5.0
    lines = benchmark.ops_table(merged)
    assert lines[5] == ('| H-ViT3-T | train | 800x1344 | 5.000 | 300.0 | 60.0 | 1.000 | '
                        '2.500 | 8.500 | 10.000 |')
    assert lines[-1] in benchmark.breakdown_table(merged)
    assert benchmark.ops_table(rows[:0]) == []


def test_gpu_benchmark_smoke_run_on_cpu(tmp_path):
    """tools/gpu_benchmark.py's smoke run, from the repository root: the
    fused == plain check and a one-run grid at a tiny size, both files."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    proc = subprocess.run(
        [sys.executable, 'tools/gpu_benchmark.py', '--device', 'cpu', '--sizes', '64x96',
         '--runs', '1', '--out', str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    report = json.loads((tmp_path / 'gpu_benchmark.json').read_text())
    assert set(report['info']['check']) == {'fp32', 'bf16'}  # fp16 on CUDA only
    assert report['info']['check']['fp32']['grads_finite']
    assert report['rows'] and all('seconds' in r for r in report['rows'])
    assert '| vit3-t-fused | 64x96 |' in (tmp_path / 'gpu_benchmark.md').read_text()


def test_variants_are_measured_apart_and_reported_against_fp32_eager_fixed(tmp_path):
    """--precisions / --executions / --scales: one measurement per variant,
    a compiled multi-scale one with one graph per size; the variants' table
    and goals set against fp32, eager, fixed size."""
    out = tmp_path / 'bench'
    assert benchmark.run(parse_args([
        '--models', 'vit3-t', '--sizes', '64x96', '--modes', 'infer', '--precisions', 'bf16',
        '--executions', 'compiled', '--compile-backend', 'eager', '--scales', 'multi',
        '--warmup', '0', '--repeat', '2', '--threads', '1', '--out-dir', str(out)])) == 0
    rows = [json.loads(line) for line in (out / 'results.jsonl').read_text().splitlines()]
    assert [benchmark.variant(r) for r in rows] == [('bf16', 'compiled', 'multi', 'auto')]
    assert benchmark.multi_sizes(64, 96) == [(64, 96), (96, 128)]
    for r in rows:
        assert 'error' not in r, r
        assert r['first_seconds'] > 0 and r['graphs'] == 2, r  # one graph per size
    table = (out / 'benchmark.md').read_text()
    assert '| backbone | H-ViT3-T [bf16, compiled, multi-scale] | infer | 64x96 |' in \
        table.split('Variants against fp32, eager, fixed size')[1]
    assert benchmark.multi_sizes(800, 1344) == [(800, 1344), (736, 1216), (896, 1504)]

    ref = benchmark.REF_SIZE
    results = [result('vit3-t', 'infer', ref, 1.0, 1.0),
               dict(result('vit3-t', 'infer', ref, 0.5, 1.0), precision='bf16'),
               result('vit3-t', 'train', ref, 3.0, 1.0),
               dict(result('vit3-t', 'train', ref, 3.0, 1.0), scales='multi'),
               dict(result('vit3-t', 'train', ref, 3.3, 1.0), scales='multi',
                    execution='compiled', first_seconds=40., graphs=3)]
    lines = {line.split(' | ')[0].lstrip('| '): line for line in benchmark.goals(results)}
    assert '| 0.50 | ≤ 0.67 | met |' in lines['backbone: ViT3-T bf16 / fp32, inference time']
    assert '| 1.10 | ≤ 1.0 | NOT met |' in \
        lines['backbone: ViT3-T compiled / eager, multi-scale training step']
    variants = benchmark.variants_table(results)
    assert '| backbone | H-ViT3-T [bf16] | infer | 800x1344 | 0.500 | 0.50x | 0.0 |  |' in variants
    assert ('| backbone | H-ViT3-T [compiled, multi-scale] | train | 800x1344 | 3.300 | 1.10x | '
            '40.0 | 3 |') in variants


@pytest.mark.parametrize('record', sorted(p.parent.name for p in
                                          (ROOT / 'docs' / 'benchmarks').glob('*/results.jsonl')))
def test_recorded_benchmark_tables_are_the_tools_output_of_their_results(record):
    """The tables under docs/benchmarks/ are what tools/benchmark.py writes
    from the results.jsonl beside them (--replot), not typed."""
    folder = ROOT / 'docs' / 'benchmarks' / record
    machine = json.loads((folder / 'machine.json').read_text())
    results = benchmark.aggregate(benchmark.read_results(str(folder)))
    assert (folder / 'benchmark.md').read_text() == benchmark.markdown(results, machine)
