# Copyright (c) mmvit3 authors. All rights reserved.
"""The measurements' rows: found by what they measured, read back from
``results.jsonl``, and merged over ``--rounds``."""
import json
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence


#: a measurement's variant: precision, execution, scales and tuning (``auto``:
#: every choice follows the CPU; else forced, as ``MMVIT3_TUNING`` takes
#: it), and their defaults
VARIANT = (('precision', 'fp32'), ('execution', 'eager'), ('scales', 'fixed'),
           ('tuning', 'auto'))
#: the default variant, the one the others are compared with
DEFAULT_VARIANT = tuple(default for _, default in VARIANT)


def variant(r: dict) -> tuple:
    """``(precision, execution, scales, tuning)`` of a row (rows written
    before variants existed: ``amp`` is bf16, the rest the defaults)."""
    old = {'precision': 'bf16'} if r.get('amp') else {}
    return tuple(r.get(k, old.get(k, default)) for k, default in VARIANT)


def _key(r: dict) -> tuple:
    return (r['level'], r['model'], r['mode'], tuple(r['size'])) + variant(r)


def find(results: Sequence[dict], model, level, mode, size,
         precision='fp32', execution='eager', scales='fixed',
         tuning='auto') -> Optional[dict]:
    """The first row of that measurement that did not fail, or None."""
    key = (level, model, mode, tuple(size), precision, execution, scales, tuning)
    for r in results:
        if _key(r) == key and 'error' not in r:
            return r
    return None


def read_results(out_dir: str) -> List[dict]:
    """The rows of ``out_dir/results.jsonl`` (none without it)."""
    path = osp.join(out_dir, 'results.jsonl')
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def aggregate(results: Sequence[dict]) -> List[dict]:
    """One result per (level, model, mode, size, variant) from several ``--rounds``:
    the median time over the rounds (and of ``--breakdown``'s seconds), the
    largest peak memory. A measurement
    that failed in every round keeps its first error."""
    groups: Dict[tuple, List[dict]] = {}
    for r in results:
        groups.setdefault(_key(r), []).append(r)
    merged = []
    for rows in groups.values():
        ok = [r for r in rows if 'error' not in r]
        if not ok:
            merged.append(rows[0])
            continue
        sec = statistics.median(r['seconds'] for r in ok)
        extra = {}
        for field in ('parts', 'ops'):  # --breakdown's per-part and per-class seconds
            if all(field in r for r in ok):
                extra[field] = {k: statistics.median(r[field][k] for r in ok)
                                for k in ok[0][field]}
        merged.append(dict(ok[0], **extra, seconds=sec, images_per_s=ok[0]['batch'] / sec,
                           runs=sum(r['runs'] for r in ok), rounds=len(ok),
                           peak_gib=max(r['peak_gib'] for r in ok),
                           step_gib=max(r['step_gib'] for r in ok)))
    return merged
