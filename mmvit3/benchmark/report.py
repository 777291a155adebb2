# Copyright (c) mmvit3 authors. All rights reserved.
"""The report: the table of every measurement (``benchmark.md``, with the
machine it ran on), the goal ratios, plain ViT3 against DeiT beside the
papers' claims, the ``--breakdown`` tables, and the files written."""
import json
import os.path as osp
from typing import List, Sequence

from .figure import plot
from .models import BIG_SIZE, LABELS, PAPER_SIZES, REF_SIZE
from .parts import PART_GROUPS
from .results import DEFAULT_VARIANT, VARIANT, find, variant


def goals(results: Sequence[dict]) -> List[str]:
    """The issue's targets, where the results hold what they need."""
    lines = []

    def ratio(text, num, den, field, limit, below=True):
        if num is None or den is None:
            return
        value = num[field] / den[field]
        ok = value <= limit if below else value >= limit
        lines.append(f'| {text} | {value:.2f} | {"≤" if below else "≥"} '
                     f'{limit} | {"met" if ok else "NOT met"} |')

    for level in ('backbone', 'detector'):
        get = lambda m, mode, s=REF_SIZE: find(results, m, level, mode, s)  # noqa
        fast_i, fast_t = get('vit3-t', 'infer'), get('vit3-t', 'train')
        ratio(f'{level}: ViT3-T / Swin-T, inference time', fast_i,
              get('swin-t', 'infer'), 'seconds', 0.85)
        ratio(f'{level}: ViT3-T / Swin-T, training-step time', fast_t,
              get('swin-t', 'train'), 'seconds', 1.1)
        ratio(f'{level}: ViT3-T / Swin-T, training-step peak memory', fast_t,
              get('swin-t', 'train'), 'peak_gib', 1.0)
        ratio(f'{level}: plain / fast path, inference time',
              get('vit3-t-plain', 'infer'), fast_i, 'seconds', 1.3, False)
        ratio(f'{level}: plain / fast path, training-step time',
              get('vit3-t-plain', 'train'), fast_t, 'seconds', 1.3, False)
        ratio(f'{level}: ViT3-T bf16 / fp32, inference time',
              find(results, 'vit3-t', level, 'infer', REF_SIZE, precision='bf16'), fast_i,
              'seconds', round(1 / 1.5, 2))
        ratio(f'{level}: ViT3-T compiled / eager, multi-scale training step',
              find(results, 'vit3-t', level, 'train', REF_SIZE, execution='compiled',
                   scales='multi'),
              find(results, 'vit3-t', level, 'train', REF_SIZE, scales='multi'), 'seconds', 1.0)
        for mode in ('infer', 'train'):
            big = get('vit3-t', mode, BIG_SIZE)
            ref = get('vit3-t', mode, REF_SIZE)
            ratio(f'{level}: ViT3-T {mode}, time 1600x2688 / 800x1344', big,
                  ref, 'seconds', 4.3)
            ratio(f'{level}: ViT3-T {mode}, peak memory 1600x2688 / 800x1344',
                  big, ref, 'peak_gib', 4.3)
    if lines:
        lines = ['| goal | ratio | target | |', '| --- | --- | --- | --- |'
                 ] + lines
    return lines


def plain_comparison(results: Sequence[dict]) -> List[str]:
    """Plain ViT3 against DeiT at the papers' sizes: DeiT's time over plain
    ViT3's (speed-up) and plain ViT3's step memory (what the step added to
    the process) over DeiT's, beside what the papers report."""
    lines = []
    for size in sorted({tuple(r['size']) for r in results}):
        for v in ('t', 's'):
            for mode in ('infer', 'train'):
                ours = find(results, f'plain-vit3-{v}', 'backbone', mode, size)
                for ref in (f'deit-{v}', f'deit-{v}-naive'):
                    other = find(results, ref, 'backbone', mode, size)
                    if ours is None or other is None:
                        continue
                    paper = PAPER_SIZES.get(size, '')
                    if paper and v == 's':
                        paper = 'none (the papers compare T only)'
                    lines.append(
                        f"| {size[0]}x{size[1]} | {LABELS[f'plain-vit3-{v}']} vs "
                        f"{LABELS[ref]} | {mode} | {other['seconds'] / ours['seconds']:.2f}x | "
                        f"{100 * ours['step_gib'] / max(other['step_gib'], 1e-9):.1f}% | "
                        f'{paper} |')
    if lines:
        lines = ['| input | models | mode | speed-up | step memory share | papers |',
                 '| --- | --- | --- | --- | --- | --- |'] + lines
    return lines


def label(r: dict) -> str:
    """The model's name, and its variant where it is not fp32 / eager /
    fixed size / tuned for the CPU: ``H-ViT3-T [bf16, compiled, multi-scale,
    linear=blas]``."""
    names = {'multi': 'multi-scale'}
    extra = [names.get(v, v) for v, (_, default) in zip(variant(r), VARIANT) if v != default]
    return LABELS[r['model']] + (f" [{', '.join(extra)}]" if extra else '')


def variants_table(results: Sequence[dict]) -> List[str]:
    """Each variant beside the same measurement in fp32, eager, at a fixed
    size, tuned for the CPU: the time per step (steady state; multi-scale:
    the median over the sizes), its ratio, the first step at each size (compilation included)
    and the graphs compiled; nothing where no variant was measured."""
    rows = [r for r in results if 'error' not in r and variant(r) != DEFAULT_VARIANT]
    if not rows:
        return []
    lines = ['', 'Variants against fp32, eager, fixed size (steady-state time per step; '
             'first steps: the first step at each size, compilation included):', '',
             '| level | model | mode | input | time (s) | vs fp32 eager fixed | '
             'first steps (s) | graphs |', '| --- ' * 8 + '|']
    for r in rows:
        ref = find(results, r['model'], r['level'], r['mode'], r['size'])
        vs = f"{r['seconds'] / ref['seconds']:.2f}x" if ref else ''
        lines.append(f"| {r['level']} | {label(r)} | {r['mode']} | {r['size'][0]}x{r['size'][1]}"
                     f" | {r['seconds']:.3f} | {vs} | {r.get('first_seconds', 0):.1f} | "
                     f"{r.get('graphs', '')} |")
    return lines


def markdown(results: Sequence[dict], machine: dict) -> str:
    """``benchmark.md``: the machine, a row per measurement, then the goal,
    DeiT and ``--breakdown`` tables that the results hold."""
    hw = f"{machine['cpu']}, {machine['cores']} cores, " \
         f"{machine['threads']} torch threads, {machine['memory_gib']} GiB"
    if machine.get('isa'):
        hw += (f", ISA {machine['isa']} (torch's CPU kernels: "
               f"{machine.get('torch_cpu_kernels', '?')})")
        if machine.get('isa_caps'):
            hw += f", capped by {machine['isa_caps']}"
    if machine.get('gpu'):
        hw = f"{machine['gpu']} ({hw})"
    rounds = sorted({r.get('rounds', 1) for r in results if 'error' not in r}) or [1]
    span = str(rounds[0]) if len(rounds) == 1 else f'{rounds[0]}-{rounds[-1]}'
    over_rounds = (f' (median over {span} rounds, the whole plan run one '
                   'measurement after the other each round)' if rounds[-1] > 1 else '')
    malloc = f"; {machine['malloc']}" if machine.get('malloc') else ''
    malloc += f"; tuning: {machine['tuning']}" if machine.get('tuning') else ''
    lines = [
        f"Measured {machine['date']} on {hw}{malloc}; torch {machine['torch']}, "
        f"device {machine['device']}, batch "
        f"{results[0]['batch'] if results else 1}. Time: median of the timed "
        f"runs{over_rounds}; memory: peak RSS of the process (CPU) or peak "
        'allocated (CUDA), and the part the step added.', '',
        '| level | model | mode | input | params | time (s) | images/s | '
        'peak memory (GiB) | step memory (GiB) |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- |'
    ]
    for r in results:
        size = f"{r['size'][0]}x{r['size'][1]}"
        head = f"| {r['level']} | {label(r)} | {r['mode']} | {size}"
        if 'error' in r:
            lines.append(f"{head} | | {r['error']} | | | |")
            continue
        lines.append(
            f"{head} | {r['params'] / 1e6:.1f}M | {r['seconds']:.3f} | "
            f"{r['images_per_s']:.2f} | {r['peak_gib']:.2f} | "
            f"{r['step_gib']:.2f} |")
    lines += variants_table(results)
    goal_lines = goals(results)
    if goal_lines:
        lines += ['', 'Goals (ratios from this run):', ''] + goal_lines
    plain_lines = plain_comparison(results)
    if plain_lines:
        lines += ['', 'Plain ViT3 against DeiT (this run; the papers measured on GPUs):',
                  ''] + plain_lines
    lines += breakdown_table(results)
    return '\n'.join(lines) + '\n'


def breakdown_table(results: Sequence[dict]) -> List[str]:
    """The ``--breakdown`` times as a table, or nothing without them."""
    rows = [r for r in results if 'parts' in r and 'error' not in r]
    if not rows:
        return []
    groups = [g for g in PART_GROUPS if any(g in r['parts'] for r in rows)]
    lines = [
        '', 'Where the time goes (seconds; each part of the backbone timed on its '
        'own, fed what it gets in the model; "rest" is the whole step less the '
        'parts: reshapes and dropout between them, the loss, timing noise):', '',
        '| model | mode | input | ' + ' | '.join(groups) + ' | rest | whole |',
        '| --- ' * (len(groups) + 5) + '|'
    ]
    for r in rows:
        cells = [f"{r['parts'][g]:.3f}" if g in r['parts'] else '' for g in groups]
        rest = r['seconds'] - sum(r['parts'].values())
        lines.append(f"| {LABELS[r['model']]} | {r['mode']} | {r['size'][0]}x{r['size'][1]} | "
                     + ' | '.join(cells) + f" | {rest:.3f} | {r['seconds']:.3f} |")
    return lines + ops_table(rows)


def ops_table(results: Sequence[dict]) -> List[str]:
    """The ``--breakdown`` operator split (CPU) as a table, or nothing."""
    rows = [r for r in results if 'ops' in r and 'error' not in r]
    if not rows:
        return []
    lines = [
        '', 'What the operators compute (per step under torch.profiler, self CPU '
        'time in seconds; "other" is everything but matrix-product and '
        'convolution kernels: element-wise work, norms, copies, reductions; '
        'the profiler makes a step slower than a timed one):', '',
        '| model | mode | input | matrix products | G multiply-adds | '
        'G multiply-adds/s | convolutions | other | profiled step | timed step |',
        '| --- ' * 10 + '|'
    ]
    for r in rows:
        ops = r['ops']
        mm = ops['matrix products']
        rate = f"{ops['gmac'] / mm:.1f}" if mm > 0 else ''
        lines.append(f"| {LABELS[r['model']]} | {r['mode']} | {r['size'][0]}x{r['size'][1]} | "
                     f"{mm:.3f} | {ops['gmac']:.1f} | {rate} | {ops['convolutions']:.3f} | "
                     f"{ops['other']:.3f} | {ops['profiled']:.3f} | {r['seconds']:.3f} |")
    return lines


def write_reports(out_dir: str, results: List[dict], machine: dict) -> None:
    """``benchmark.md``, ``machine.json`` and ``benchmark.png`` in ``out_dir``."""
    with open(osp.join(out_dir, 'benchmark.md'), 'w') as f:
        f.write(markdown(results, machine))
    with open(osp.join(out_dir, 'machine.json'), 'w') as f:
        json.dump(machine, f, indent=1)
    plot(results, osp.join(out_dir, 'benchmark.png'), machine)
