"""The README and docs/ as a reader meets them: every link leads to a file
or heading that exists, the citation is right, and the README is short,
starts with installation and has a table of contents."""
import re
import unicodedata
from pathlib import Path

import pytest
from _helpers import ROOT

PAGES = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))
LINK = re.compile(r'(?<!!)\[([^\]]+)\]\(([^)\s]+)\)')
IMAGE = re.compile(r'!\[[^\]]*\]\(([^)\s]+)\)')


def prose(text: str) -> str:
    """The text without its fenced code blocks."""
    return re.sub(r'```.*?```', '', text, flags=re.S)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped,
    spaces to hyphens."""
    text = re.sub(r'[`*_]', '', heading.strip().lower())
    text = ''.join(c for c in text if c in ' -' or unicodedata.category(c)[0] in 'LN')
    return text.replace(' ', '-')


def anchors(page: Path) -> set:
    return {slug(m[1]) for m in re.finditer(r'^#+ (.+)$', prose(page.read_text()), re.M)}


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_every_link_leads_somewhere(page):
    text = prose(page.read_text())
    broken = []
    for _, target in LINK.findall(text):
        if target.startswith(('http://', 'https://', 'mailto:')):
            continue
        path, _, anchor = target.partition('#')
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f'{target}: no such file')
        elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
            broken.append(f'{target}: no heading #{anchor} in {dest.name}')
    for target in IMAGE.findall(text):
        if not target.startswith('http') and not (page.parent / target).exists():
            broken.append(f'{target}: no such image')
    assert not broken, f'{page.name}:\n' + '\n'.join(broken)


def test_the_citation_is_the_papers():
    text = (ROOT / 'README.md').read_text()
    entry = re.search(r'@inproceedings\{(\w+),(.*?)\n\}', text, re.S)
    assert entry, 'no BibTeX entry'
    year = re.search(r'year=\{(\d{4})\}', entry[2])[1]
    assert year == '2026' and entry[1].endswith(f'{year}vit'), entry[1]
    assert 'arxiv.org/abs/2512.01643' in text


def test_the_readme_is_short_starts_with_installation_and_has_contents():
    text = (ROOT / 'README.md').read_text()
    words = len(re.findall(r'\S+', prose(text)))
    assert words <= 3000, f'{words} words: move details to docs/'
    sections = re.findall(r'^## (.+)$', prose(text), re.M)
    assert sections[0] == 'Contents' and sections[1] == 'Installation', sections
    contents = text[text.index('## Contents'):text.index('## Installation')]
    linked = {m[2] for m in LINK.finditer(contents)}
    assert {f'#{slug(s)}' for s in sections[1:]} <= linked, sections


def test_the_demo_page_quotes_the_recorded_demo_run():
    """docs/demo.md's box / mask AP of the detection demo are the recorded
    tools/test.py line's (docs/benchmarks/demo_amp_cpu.md, its first, float32
    line), not typed."""
    record = (ROOT / 'docs' / 'benchmarks' / 'demo_amp_cpu.md').read_text()
    line = re.search(r'^Iter\(test\).*$', record, re.M)[0]
    box, mask = (100 * float(re.search(rf'coco/{k}_mAP: ([\d.]+)', line)[1]) for k in ('bbox', 'segm'))
    page = (ROOT / 'docs' / 'demo.md').read_text()
    assert f'box AP {box:.1f} and mask AP {mask:.1f} in the recorded run' in page


def recorded_demo_runs():
    """{config stem: {metric: value}} of docs/benchmarks/demos_cpu.md (the
    tools' own lines: the test's metrics and the last training line's
    seconds an iteration)."""
    record = (ROOT / 'docs' / 'benchmarks' / 'demos_cpu.md').read_text()
    runs = {}
    for name, block in re.findall(r'configs/demo/(\w+)\.py`, then.*?```text\n(.*?)```', record, re.S):
        train, test = block.strip().splitlines()
        values = {k: float(v) for k, v in re.findall(r'(\w+/?\w*): ([\d.]+)', test)}
        values['step_s'] = float(re.search(r' time: ([\d.]+)', train)[1])
        runs[name] = values
    return runs


def test_the_demo_page_quotes_the_recorded_segmentation_and_plain_runs():
    """docs/demo.md's figures of the segmentation and plain demos are the
    recorded runs' (docs/benchmarks/demos_cpu.md), not typed."""
    runs = recorded_demo_runs()
    assert set(runs) == {'upernet_vit3_demo', 'upernet_vit3_plain_demo',
                         'mask_rcnn_vit3_plain_demo'}
    seg, plain_seg, plain_det = (runs[k] for k in ('upernet_vit3_demo', 'upernet_vit3_plain_demo',
                                                   'mask_rcnn_vit3_plain_demo'))
    page = re.sub(r'\s+', ' ', (ROOT / 'docs' / 'demo.md').read_text())
    for claim in (f"the segmentation demo reaches mIoU {seg['mIoU']:.1f} over the four classes",
                  f"steps at {plain_det['step_s']:.2f} s an iteration and reaches box AP "
                  f"{100 * plain_det['coco/bbox_mAP']:.1f} and mask AP "
                  f"{100 * plain_det['coco/segm_mAP']:.1f} after 720 iterations",
                  f"(MultiLevelNeck, 120 iterations) reaches mIoU {plain_seg['mIoU']:.1f}"):
        assert claim in page, claim


def test_the_export_page_quotes_the_recorded_plain_recipe_compile_run():
    """docs/export.md's plain-recipe compile run is the recorded log's
    (docs/benchmarks/compile_plain_recipe_cpu.md): one size, one graph per
    part, and the first iteration's time."""
    record = (ROOT / 'docs' / 'benchmarks' / 'compile_plain_recipe_cpu.md').read_text()
    sizes = re.findall(r'^compile: (\w+) for input size (\S+) \((\d+) of', record, re.M)
    assert [(part, n) for part, _, n in sizes] == [('PlainViT3', '1'), ('SimpleFPN', '1')]
    assert sizes[0][1] == '1x3x1024x1024'
    first = float(re.search(r'^Epoch\(train\) \[1\]\[1/\d+\].* time: ([\d.]+)', record, re.M)[1])
    page = re.sub(r'\s+', ' ', (ROOT / 'docs' / 'export.md').read_text())
    assert f'included, took {first:.0f} s on the AMD EPYC' in page


def performance_section(start: str, end: str) -> str:
    """The part of docs/performance_cpu.md from heading ``start`` to ``end``."""
    page = (ROOT / 'docs' / 'performance_cpu.md').read_text()
    return page[page.index(start):page.index(end)]


def recorded_table(record: str, title: str) -> str:
    """The table of a tools/benchmark.py record that starts with ``title``."""
    return record[record.index(title):].split('\n\n')[0].strip()


def test_the_performance_page_quotes_the_recorded_tuning_runs():
    """docs/performance_cpu.md's rows of the matrix-product runs are the
    recorded tables' (docs/benchmarks/linear_cpu, linear_avx2_cpu), and the
    default each ran with is the one the page says."""
    section = performance_section('## Tuning that follows the CPU', '## Freed memory on CPU')
    quoted = [line for line in section.splitlines() if line.startswith('| backbone |')]
    recorded = []
    for name, default in (('linear_cpu', 'oneDNN'), ('linear_avx2_cpu', 'BLAS')):
        folder = ROOT / 'docs' / 'benchmarks' / name
        assert f'; {default} float32 matrix products' in (folder / 'machine.json').read_text()
        variants = (folder / 'benchmark.md').read_text().split('Variants against')[1]
        recorded += [line for line in variants.split('\n\n')[1].splitlines()
                     if line.startswith('| backbone |')]
    assert quoted == recorded
    # the fused kernels with AVX2 alone: the record's breakdown, whole
    record = (ROOT / 'docs' / 'benchmarks' / 'parts_avx2_cpu' / 'benchmark.md').read_text()
    assert 'capped by ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2' in record
    assert recorded_table(record, '| model | mode | input | stem |') in section


def test_the_performance_page_quotes_the_recorded_breakdown_against_the_targets():
    """docs/performance_cpu.md's re-measured breakdown: its tables are the
    record's (docs/benchmarks/parts_cpu), and the sums and targets it states
    are computed from them."""
    from mmvit3 import benchmark
    folder = ROOT / 'docs' / 'benchmarks' / 'parts_cpu'
    section = performance_section('### Against the targets', '## Implementations')
    record = (folder / 'benchmark.md').read_text()
    for title in ('| model | mode | input | stem |', '| model | mode | input | matrix products |'):
        assert recorded_table(record, title) in section, title
    rows = {(r['model'], r['mode']): r
            for r in benchmark.aggregate(benchmark.read_results(str(folder)))}
    vit_i, swin_i, vit_t, swin_t = (rows[k] for k in [('vit3-t', 'infer'), ('swin-t', 'infer'),
                                                      ('vit3-t', 'train'), ('swin-t', 'train')])

    def blocks(r):
        return sum(v for k, v in r['parts'].items() if k.startswith('stage'))

    def stem_downs(r):
        return sum(v for k, v in r['parts'].items() if k == 'stem' or k.startswith('down'))

    text = re.sub(r'\s+', ' ', section)
    target_i, target_t = 0.85 * swin_i['seconds'], 1.10 * swin_t['seconds']
    for claim in (
            f"step is {target_i:.2f} s: {vit_i['seconds'] - target_i:.2f} s less than H-ViT³-T's, "
            f"more than all its convolutions take ({vit_i['ops']['convolutions']:.2f} s)",
            f"take {blocks(vit_t):.2f} s against Swin-T's {blocks(swin_t):.2f} s",
            f"take {stem_downs(vit_t):.2f} s against Swin-T's {stem_downs(swin_t):.2f} s",
            f"step is {target_t:.2f} s, {vit_t['seconds'] - target_t:.2f} s less than H-ViT³-T's: "
            f"nearly all of the {stem_downs(vit_t) - stem_downs(swin_t):.2f} s"):
        assert claim in text, claim
    assert vit_i['seconds'] - target_i > vit_i['ops']['convolutions']  # the page's conclusion
