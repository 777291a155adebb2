# Copyright (c) mmvit3 authors. All rights reserved.
"""A benchmark run: the plan of measurements the arguments make, and the run
(each measurement in its own process, then the report), or only the report
again with ``--replot``. :mod:`mmvit3.cli.benchmark` parses the arguments."""
import argparse
import itertools
import json
import os
import os.path as osp
import sys
from typing import List

from .measurement import machine_info, run_job
from .models import SINGLE_SCALE
from .report import markdown, write_reports
from .results import aggregate, read_results


def parse_size(text: str) -> tuple:
    """``H`` or ``HxW`` as ``(H, W)``."""
    parts = text.lower().split('x')
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f'size must be H, HxW or H W with positive integers, got {text!r}')
    return int(parts[0]), int(parts[1])


def plan(args) -> List[dict]:
    """The measurements the arguments ask for, one job (a dict for
    :func:`run_job`) each; single-scale models at backbone level only."""
    jobs = []
    for level in args.levels:
        for model in args.models:
            if model in SINGLE_SCALE and level != 'backbone':
                continue
            for mode, size, precision, execution, scales, tuning in itertools.product(
                    args.modes, args.sizes, args.precisions, args.executions, args.scales,
                    args.tunings):
                jobs.append(dict(
                    model=model, level=level, mode=mode, size=size,
                    precision=precision, execution=execution, scales=scales, tuning=tuning,
                    compile_backend=args.compile_backend,
                    batch=args.batch, device=args.device,
                    threads=args.threads, warmup=args.warmup,
                    repeat=args.repeat, max_time=args.max_time,
                    mem_limit_gib=args.mem_limit,
                    breakdown=args.breakdown and level == 'backbone'))
    return jobs


def run(args) -> int:
    """tools/benchmark.py with its parsed ``args``: 0 once the
    report is written, 2 where it cannot start (no CUDA device, a bad
    ``MMVIT3_MALLOC``)."""
    if args.replot:
        results = aggregate(read_results(args.replot))
        with open(osp.join(args.replot, 'machine.json')) as f:
            machine = json.load(f)
        write_reports(args.replot, results, machine)
        print(markdown(results, machine))
        return 0
    if args.device == 'cuda':
        import torch
        if not torch.cuda.is_available():
            print('--device cuda: no CUDA device is available', file=sys.stderr)
            return 2
    from mmengine.utils import ProgressBar
    os.makedirs(args.out_dir, exist_ok=True)
    try:
        machine = machine_info(args.device, args.threads)
    except ValueError as err:  # a bad MMVIT3_MALLOC
        print(err, file=sys.stderr)
        return 2
    jobs = plan(args)
    results: List[dict] = []
    log = osp.join(args.out_dir, 'results.jsonl')
    rounds = f' x {args.rounds} rounds' if args.rounds > 1 else ''
    print(f'{len(jobs)} measurements{rounds}, each in its own process; '
          f'results go to {log} as they come')
    bar = ProgressBar(len(jobs) * args.rounds)
    with open(log, 'w') as f:
        for round_ in range(args.rounds):
            for job in jobs:
                result = dict(run_job(job, args.timeout), round=round_)
                results.append(result)
                f.write(json.dumps(result) + '\n')
                f.flush()
                bar.update()
    print()
    results = aggregate(results)
    write_reports(args.out_dir, results, machine)
    print(markdown(results, machine))
    print(f'Wrote {args.out_dir}/benchmark.md and benchmark.png')
    return 0
