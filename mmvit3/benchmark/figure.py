# Copyright (c) mmvit3 authors. All rights reserved.
"""The log-log plot of time and memory against pixels (``benchmark.png``),
with linear and quadratic slopes through the smallest ViT3-T point."""
from typing import Sequence

from .models import LABELS
from .results import variant


def plot(results: Sequence[dict], path: str, machine: dict) -> None:
    """Time and peak memory against pixels, a panel per level, mode and
    field, on log-log axes."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    ok = [r for r in results if 'error' not in r]
    ok = [r for r in ok if variant(r) == variant(ok[0])]  # one variant: the first measured
    levels = [lv for lv in ('backbone', 'detector')
              if any(r['level'] == lv for r in ok)]
    if not levels:
        return
    panels = [(lv, mode, field) for lv in levels for field in
              ('seconds', 'peak_gib') for mode in ('infer', 'train')]
    cols = 4
    rows = len(levels)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows),
                             squeeze=False)
    for ax, (level, mode, field) in zip(axes.flat, panels):
        drawn = False
        for model in LABELS:
            pts = sorted((r['size'][0] * r['size'][1], r[field]) for r in ok
                         if r['model'] == model and r['level'] == level
                         and r['mode'] == mode)
            if not pts:
                continue
            drawn = True
            ax.plot(*zip(*pts), marker='o', label=LABELS[model],
                    linestyle='--' if model.endswith('plain') else '-')
        if drawn:  # slopes 1 and 2 through the smallest ViT3-T point
            first = next((m for m in ('vit3-t', 'plain-vit3-t') if any(
                r['model'] == m for r in ok)), None)
            anchor = sorted((r['size'][0] * r['size'][1], r[field])
                            for r in ok if r['level'] == level
                            and r['mode'] == mode and r['model'] == first)
            if anchor:
                p0, v0 = anchor[0]
                xs = [p0, max(r['size'][0] * r['size'][1] for r in ok)]
                for slope, style in ((1, ':'), (2, '-.')):
                    ax.plot(xs, [v0 * (x / p0)**slope for x in xs],
                            color='grey', linestyle=style, linewidth=1,
                            label=f'slope {slope} ({"linear" if slope == 1 else "quadratic"})')
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap
        ax.set_xlabel('pixels per image')
        ax.set_ylabel('time per step (s)' if field == 'seconds' else
                      'peak memory (GiB)')
        ax.set_title(f'{level}, {"inference" if mode == "infer" else "training step"}')
        ax.grid(True, which='both', alpha=0.3)
    handles, labels = [], []
    for ax in axes.flat:
        for hnd, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(hnd)
                labels.append(lab)
    fig.legend(handles, labels, loc='lower center', ncol=min(len(labels), 5),
               fontsize=8)
    fig.suptitle(f"{machine['device'].upper()}: {machine.get('gpu') or machine['cpu']}"
                 f" ({machine['threads']} threads), batch "
                 f"{ok[0]['batch']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
