# Copyright (c) mmvit3 authors. All rights reserved.
"""One measurement in a process of its own, so that peak memory is that
model's alone: the parent (:func:`run_job`) starts
``python -m mmvit3.benchmark.child JOB_JSON``, the child (:func:`child_main`)
measures and prints one ``RESULT`` line; and the machine
the measurements ran on (:func:`machine_info`)."""
import json
import os
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import List, Optional

from .. import tuning as malloc
from ..engine.amp import BF16_ISA, feature_autocast, feature_parts
from ..models.impl import AUTO_DEVICES
from .models import build, det_samples
from .parts import profile_ops, time_parts

#: where this mmvit3 lies: the child imports the same copy as the parent
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _status_gib(field: str) -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    return float('nan')


def multi_sizes(h: int, w: int) -> List[tuple]:
    """The sizes of a multi-scale measurement around ``(h, w)``: itself and
    0.9x / 1.1x each side, padded to 32 as the detectors' data preprocessor
    pads (together about the pixels of ``(h, w)`` three times), each once."""
    pad = lambda v: -(-int(round(v)) // 32) * 32  # noqa: E731
    sizes = [(h, w), (pad(h * .9), pad(w * .9)), (pad(h * 1.1), pad(w * 1.1))]
    return sorted(set(sizes), key=sizes.index)


def measure(job: dict) -> dict:
    """Time and peak memory of one (model, level, mode, size) in this
    process, in its precision (``fp32`` / ``bf16`` autocast), execution
    (``eager`` / ``compiled``: torch.compile of the backbone, or of a
    detector's backbone and neck, one graph per size) and scales (``fixed``,
    or ``multi``: the steps cycle through :func:`multi_sizes`)."""
    import torch
    if job.get('threads'):
        torch.set_num_threads(job['threads'])
    device = torch.device(job['device'])
    train = job['mode'] == 'train'
    bf16 = job.get('precision', 'bf16' if job.get('amp') else 'fp32') == 'bf16'
    torch.manual_seed(0)
    model = build(job['model'], job['level']).to(device)
    model.train(train)
    params = sum(p.numel() for p in model.parameters())
    detector = job['level'] == 'detector'
    sizes = (multi_sizes(*job['size']) if job.get('scales') == 'multi'
             else [tuple(job['size'])])
    batches = [(torch.randn(job['batch'], 3, h, w, device=device),
                det_samples(job['batch'], h, w, train, device) if detector else None)
               for h, w in sizes]
    if job.get('execution') == 'compiled':
        torch._dynamo.config.recompile_limit = len(sizes) + 2
        for part in (feature_parts(model).values() if detector else [model]):
            part.forward = torch.compile(part.forward, dynamic=False,
                                         backend=job.get('compile_backend', 'inductor'))

    def amp():
        # a detector: its backbone and neck (the heads' mmcv ops take float32)
        if detector:
            return feature_autocast(model, torch.bfloat16, enabled=bf16)
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step(i=0):
        x, samples = batches[i % len(batches)]
        with torch.set_grad_enabled(train), amp():
            if samples is None:
                out = model(x)
                loss = sum(o.float().mean() for o in out)
            elif train:
                losses = model(x, samples, mode='loss')
                loss = sum(v.sum() for k, v in losses.items() if 'loss' in k
                           for v in (v if isinstance(v, list) else [v]))
            else:
                model(x, samples, mode='predict')
                loss = None
        if train:
            loss.backward()
            model.zero_grad(set_to_none=True)
        sync()

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    cuda = device.type == 'cuda'
    base = (torch.cuda.memory_allocated() / 2**30 if cuda else
            _status_gib('VmRSS'))
    # the first step at each size (compilation, first-touch allocations) apart
    first = 0.
    for i in range(len(sizes)):
        start = time.perf_counter()
        step(i)
        first += time.perf_counter() - start
    times: List[float] = []
    budget_end = time.perf_counter() + job['max_time']
    for i in range(job['warmup'] + job['repeat']):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        step(i)
        if i >= job['warmup']:
            times.append(time.perf_counter() - start)
        if times and time.perf_counter() > budget_end:
            break
    peak = (torch.cuda.max_memory_allocated() / 2**30 if cuda else
            _status_gib('VmHWM'))
    sec = statistics.median(times)
    result = dict(params=params, seconds=sec, runs=len(times),
                  images_per_s=job['batch'] / sec, peak_gib=peak,
                  base_gib=base, step_gib=peak - base,
                  first_seconds=first)
    if not cuda:  # what this process's fused kernels chose
        result['choices'] = malloc.choices()
    if job.get('execution') == 'compiled':
        from torch._dynamo.utils import counters
        result['graphs'] = int(counters['stats']['unique_graphs'])
    if job.get('breakdown') and not detector:
        result['parts'] = time_parts(job['model'], model, step, train, amp(),
                                     job['repeat'], sync)
        if not cuda:  # on CUDA the CPU self time is launch time, not the kernels'
            result['ops'] = profile_ops(step, job['repeat'])
    return result


def child_main(job_json: str) -> int:
    """The child: measure the job (a JSON dict from :func:`~.cli.plan`) and print
    its result, or its error, on a line ``RESULT {...}``."""
    job = json.loads(job_json)
    os.environ[malloc.TUNING_ENV_VAR] = '' if job.get('tuning', 'auto') == 'auto' else job['tuning']
    malloc.apply_overrides()  # the job's tuning variant, the rest follows the CPU
    if job['device'] == 'cpu':
        malloc.keep_freed_memory()  # as tools/train.py and test.py do on CPU
        if job.get('mem_limit_gib'):
            # fail an allocation (reported as out of memory) before the
            # system runs out
            limit = int(job['mem_limit_gib'] * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = measure(job)
    except (RuntimeError, MemoryError) as err:
        text = str(err)
        oom = isinstance(err, MemoryError) or 'memory' in text.lower()
        result = dict(error='out of memory' if oom else text.splitlines()[0])
    print('RESULT ' + json.dumps(result), flush=True)
    return 0


#: Environment variables that make torch, oneDNN and MKL use less of the CPU's
#: ISA than it reports (to measure, on one CPU, what a smaller one would do).
ISA_CAPS = ('ATEN_CPU_CAPABILITY', 'ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA',
            'MKL_ENABLE_INSTRUCTIONS')


def machine_info(device: str, threads: Optional[int]) -> dict:
    """What the report's header says of the machine: CPU, cores, threads,
    memory, torch, the GPU on CUDA; on CPU its ISA (avx2 / avx512 /
    avx512_bf16 / amx), the kernels torch picked for it and how each
    measurement sets malloc."""
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    info = dict(date=time.strftime('%Y-%m-%d %H:%M'), cpu=cpu,
                cores=os.cpu_count(),
                threads=threads or torch.get_num_threads(),
                memory_gib=round(os.sysconf('SC_PAGE_SIZE') *
                                 os.sysconf('SC_PHYS_PAGES') / 2**30, 1),
                torch=torch.__version__, python=platform.python_version(),
                device=device)
    if device == 'cuda' and torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name()
    elif device == 'cpu':  # what the CPU reports, what each measurement's process does
        isa = malloc.cpu_isa()
        info['isa'] = ' '.join(isa) or 'unknown'
        info['torch_cpu_kernels'] = torch.backends.cpu.get_cpu_capability()
        caps = [f'{k}={os.environ[k]}' for k in ISA_CAPS if os.environ.get(k)]
        if caps:  # the libraries told to use less than the CPU has
            info['isa_caps'] = ' '.join(caps)
        bf16 = sorted(BF16_ISA & set(isa))
        info['tuning'] = (
            "impl='auto' runs the fused kernels on " + ', '.join(AUTO_DEVICES) + '; '
            + '; '.join(malloc.choices().values()) + '; bf16 '
            + (f'computed natively ({", ".join(bf16)})' if bf16 else
               'emulated (no avx512_bf16 / amx: slower than fp32)'))
        if malloc.malloc_tunable():
            setting = malloc.malloc_setting()
            info['malloc'] = (
                'glibc malloc keeping freed memory' if setting == 'keep' else
                'glibc malloc as it is') + f' ({malloc.ENV_VAR}={setting})'
    return info


def run_job(job: dict, timeout: float) -> dict:
    """Measure ``job`` in a child process: its result row, or the job with
    an ``error`` (out of memory, over ``timeout`` seconds, killed, failed)."""
    cmd = [sys.executable, '-m', 'mmvit3.benchmark.child', json.dumps(job)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    try:
        # ``-m`` puts the working directory first on sys.path: run in ROOT,
        # so that another checkout there cannot stand in for this one
        proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return dict(job, error=f'over {timeout:.0f} s')
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith('RESULT '):
            return dict(job, **json.loads(line[len('RESULT '):]))
    if proc.returncode < 0:  # killed by a signal, e.g. the OOM killer
        return dict(job, error=f'killed (signal {-proc.returncode})')
    tail = proc.stdout.strip().splitlines()[-1:] or ['no output']
    return dict(job, error=f'exit {proc.returncode}: {tail[0][:200]}')
