"""The dataset check (mmvit3.datasets.check_dataset, tools/check_dataset.py,
and before every tools/train.py / tools/test.py run): image sizes read from
the headers as mmcv decodes them (EXIF orientation included), COCO entries
counted per kind of problem with their file and annotation id, images a
keep-ratio resize shrinks to nothing, empty splits; each refused with exit
status 2 by the tools before anything is built.

Each case builds its own tiny demo data set in tmp_path; library calls where
the tools' wiring is covered by the one grouped tool test."""
import json

import mmcv
import numpy as np
import pytest
from _helpers import DET_CFG, SEG_CFG, demo_cfg, det_data_overrides, make_demo_data, page_command, \
    run_tool, seg_data_overrides
from PIL import Image

from mmvit3.datasets import check_dataset, orients, read_header


def write_oriented(path, width, height, orientation, fmt='JPEG'):
    """An image of ``width`` x ``height`` stored pixels with that EXIF
    orientation."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(
        path, fmt, exif=exif.tobytes())
    return path


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG', 'WEBP'])
def test_header_sizes_are_the_sizes_mmcv_decodes(tmp_path, fmt):
    for orientation in (1, 3, 6, 8):
        path = write_oriented(tmp_path / f'{orientation}.{fmt.lower()}', 96, 64, orientation, fmt)
        data = path.read_bytes()
        for color_type in ('color', 'grayscale', 'unchanged', 'color_ignore_orientation'):
            for backend in ('cv2', 'pillow'):
                decoded = mmcv.imfrombytes(data, flag=color_type, backend=backend)
                header = read_header(str(path), orients(color_type, backend))
                assert (header.height, header.width) == decoded.shape[:2], \
                    (orientation, color_type, backend)
                assert header.stored == (96, 64)


def demo(tmp_path):
    root = tmp_path / 'demo'
    make_demo_data.make_demo_data(str(root), num_train=2, num_val=1, size=64)
    return root


def det_cfg(root, **merge):
    ann = f'{root}/annotations/instances_val.json'
    return demo_cfg(DET_CFG, **{
        **{f'{s}_dataloader.dataset.data_root': f'{root}/' for s in ('train', 'val', 'test')},
        'val_evaluator.ann_file': ann, 'test_evaluator.ann_file': ann, **merge})


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return data


def findings(report, severity):
    return {f.what: f for r in report.splits for f in r.findings.values()
            if f.severity == severity}


def test_a_json_size_other_than_the_decoded_one_is_named_with_its_exif_orientation(tmp_path):
    root = demo(tmp_path)
    image = root / 'images' / 'train' / 'train_00000.jpg'
    write_oriented(image, 96, 64, 6)  # stored 96x64, decoded 64x96

    def stored_size(data):
        data['images'][0].update(width=96, height=64)

    edit_json(root / 'annotations' / 'instances_train.json', stored_size)
    report = check_dataset(det_cfg(root), ['train'])
    (what, found), = findings(report, 'error').items()
    assert 'EXIF orientation turns' in what and found.count == 1
    assert found.examples == [f'{image}: json 96x64, decoded 64x96, EXIF orientation 6 '
                              f'(turned 90 degrees clockwise on decoding)']
    assert "color_type='color_ignore_orientation'" in found.hint
    # a loader that does not turn it: the json fits
    unturned = det_cfg(root, **{'train_dataloader.dataset.pipeline.0.color_type':
                                'color_ignore_orientation'})
    assert check_dataset(unturned, ['train']).errors == 0
    # the json giving the decoded size fits the turning loader
    edit_json(root / 'annotations' / 'instances_train.json',
              lambda data: data['images'][0].update(width=64, height=96))
    assert check_dataset(det_cfg(root), ['train']).errors == 0


def test_bad_coco_entries_are_counted_per_kind_with_file_and_annotation_id(tmp_path):
    root = demo(tmp_path)
    nan, inf = float('nan'), float('inf')

    def spoil(data):
        img = data['images'][0]
        first = data['annotations'][0]
        data['images'].append(dict(img))  # the same id again
        extra = [
            dict(first),  # the same annotation id again
            dict(first, id=901, image_id=999),
            dict(first, id=902, bbox=[nan, 1, 5, 5]),
            dict(first, id=903, bbox=[60, 60, 10, 10]),  # partly outside 64x64
            dict(first, id=904, bbox=[70, 70, 10, 10]),  # wholly outside
            dict(first, id=905, segmentation=[[1, 1, 9, 1, 9]]),  # odd count
            dict(first, id=906, segmentation=[[1, 1, 9, 1, inf, 9]]),
            dict(first, id=907, segmentation={'size': [32, 32], 'counts': 'abc'}),
            dict(first, id=908, category_id=77),
        ]
        extra += [{k: v for k, v in dict(first, id=910 + i).items() if k != 'area'}
                  for i in range(8)]
        data['annotations'] += extra

    data = edit_json(root / 'annotations' / 'instances_train.json', spoil)
    name = root / 'images' / 'train' / data['images'][0]['file_name']
    cfg = det_cfg(root, **{'train_dataloader.dataset.metainfo.classes':
                           ('circle', 'square', 'triangle', 'hexagon')})
    report = check_dataset(cfg, ['train'])
    errors, warnings = findings(report, 'error'), findings(report, 'warning')

    def example(kinds, start, count=1):
        (what, found), = [(k, f) for k, f in kinds.items() if k.startswith(start)]
        assert found.count == count, (what, found.examples)
        return found.examples[0]

    assert example(errors, 'repeated image ids') == f'image 1: {name.name} and {name.name}'
    assert example(errors, 'repeated annotation ids').startswith(
        f"annotation {data['annotations'][0]['id']} ({name.name})")
    assert example(errors, 'boxes with NaN') == f'annotation 902 ({name.name}): [nan, 1, 5, 5]'
    assert example(errors, 'polygons with NaN').startswith('annotation 906')
    assert example(errors, 'RLE masks of another size') == (
        f'annotation 907 ({name.name}): size [32, 32], image [height, width] [64, 64]')
    missing_area = [f for k, f in errors.items() if k.startswith('annotations without a numeric')]
    assert missing_area[0].count == 8 and len(missing_area[0].examples) == 5
    assert missing_area[0].line().endswith('; ... (3 more)')
    assert example(warnings, 'annotations of an image id not in').startswith(
        'annotation 901 (image 999)')
    assert example(warnings, 'boxes partly outside').startswith('annotation 903')
    assert example(warnings, 'boxes wholly outside').startswith('annotation 904')
    assert example(warnings, 'polygons of fewer than 3 points').startswith('annotation 905')
    assert example(warnings, 'unknown category ids').endswith('category_id 77')
    assert example(warnings, 'classes of the config that no category') == "'hexagon'"
    assert set(errors) | set(warnings) == set(report.splits[0].findings)
    head = report.splits[0].head()
    assert head.startswith(f'train: {root}/annotations/instances_train.json: ')
    assert f'{len(data["images"]) - 1} images, {len(data["annotations"])} annotations' in head


def test_an_extreme_aspect_ratio_and_empty_splits_are_refused(tmp_path):
    root = demo(tmp_path)
    wide = root / 'images' / 'train' / 'train_00001.jpg'
    Image.new('RGB', (20000, 20)).save(wide)
    edit_json(root / 'annotations' / 'instances_train.json',
              lambda data: data['images'][1].update(width=20000, height=20))
    report = check_dataset(det_cfg(root), ['train'])
    (what, found), = findings(report, 'error').items()
    assert what.startswith('images the pipeline resizes to nothing')
    assert found.examples == [f'{wide}: 20000x20 becomes 256x0 in Resize(scale=(256, 256))']
    # an ADE-style split without images
    for folder in ('images', 'annotations'):
        for f in (root / 'ade' / folder / 'validation').iterdir():
            f.unlink()
    seg = demo_cfg(SEG_CFG, **{f'{s}_dataloader.dataset.data_root': f'{root}/ade/'
                               for s in ('train', 'val', 'test')})
    report = check_dataset(seg)
    assert [r.split for r in report.splits if r.count('error')] == ['val']
    assert report.splits[2].same_as == 'val'  # test: the same folder
    (what, found), = findings(report, 'error').items()
    assert what.startswith('splits without images')
    assert found.examples == [f"no file ending in '.jpg' under {root}/ade/images/validation"]


def test_tools_check_the_data_and_exit_2_naming_what_is_wrong(tmp_path):
    root = demo(tmp_path)
    rc, out = run_tool(*page_command(r'python tools/check_dataset\.py '), '--cfg-options',
                       *det_data_overrides(root))  # the page's command
    assert rc == 0, out[-3000:]
    assert f'train: {root}/annotations/instances_train.json: 2 images' in out
    assert f'val: {root}/annotations/instances_val.json: 1 images' in out and 'clean' in out

    # a 20000x20 image: the pipeline's Resize would fail in OpenCV, unnamed
    wide = root / 'images' / 'train' / 'train_00001.jpg'
    Image.new('RGB', (20000, 20)).save(wide)
    edit_json(root / 'annotations' / 'instances_train.json',
              lambda data: data['images'][1].update(width=20000, height=20))
    rc, out = run_tool('tools/check_dataset.py', DET_CFG, '--cfg-options',
                       *det_data_overrides(root))
    assert rc == 2 and f'{wide}: 20000x20 becomes 128x0' in out, out[-3000:]
    assert '1 errors, 1 warnings' in out  # and its boxes now reach beyond 20 px
    rc, out = run_tool('tools/train.py', DET_CFG, '--work-dir', tmp_path / 'w1',
                       '--cfg-options', *det_data_overrides(root))
    assert rc == 2 and f'{wide}: 20000x20 becomes 128x0' in out, out[-3000:]
    assert 'Traceback' not in out and not (tmp_path / 'w1').exists()

    # an empty val set (COCO) and an empty ADE-style split, in training and testing
    empty = tmp_path / 'empty.json'
    empty.write_text(json.dumps(dict(images=[], annotations=[], categories=[])))
    rc, out = run_tool('tools/train.py', DET_CFG, '--work-dir', tmp_path / 'w2',
                       '--cfg-options', *det_data_overrides(root),
                       'train_dataloader.dataset.ann_file=annotations/instances_val.json',
                       'train_dataloader.dataset.data_prefix.img=images/val/',
                       f'val_dataloader.dataset.ann_file={empty}',
                       f'val_evaluator.ann_file={empty}')
    assert rc == 2 and f'Annotation file {empty} lists no images' in out, out[-3000:]
    for folder in ('images', 'annotations'):
        for f in (root / 'ade' / folder / 'validation').iterdir():
            f.unlink()
    for tool in (['tools/train.py', SEG_CFG], ['tools/test.py', SEG_CFG, __file__]):
        rc, out = run_tool(*tool, '--work-dir', tmp_path / 'w3', '--cfg-options',
                           *seg_data_overrides(root))
        assert rc == 2, out[-3000:]
        assert f"no file ending in '.jpg' under {root}/ade/images/validation" in out
        assert 'need at least one array' in out and 'Traceback' not in out


def test_benchmark_script_writes_the_figure_with_the_cpu(tmp_path):
    from mmvit3.cli.benchmark_data_check import main
    from mmvit3.datasets.bench import time_coco_check, write_synthetic_coco
    path = write_synthetic_coco(str(tmp_path / 'set'), num_annotations=40, per_image=4)
    result = time_coco_check(path, str(tmp_path / 'set' / 'images'))
    assert (result['images'], result['annotations'], result['findings']) == (10, 40, 0)
    page = tmp_path / 'page.md'
    assert main(['--annotations', '40', '--per-image', '4', '--out', str(page)]) == 0
    cpu = next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
               if line.startswith('model name'))
    row = page.read_text().splitlines()[-1]
    assert row.startswith('| 20') and f'| {cpu} |' in row and '| 40 | 10 |' in row


def test_a_long_image_pass_shows_a_progress_bar(tmp_path, monkeypatch, capsys):
    from mmvit3.datasets import coco
    root = demo(tmp_path)
    monkeypatch.setattr(coco, 'PROGRESS_MIN', 2)  # 2000 images and more, here 2
    check_dataset(det_cfg(root), ['train'])
    assert '2/2, ' in capsys.readouterr().out
    check_dataset(det_cfg(root), ['train'], progress=False)
    assert '2/2, ' not in capsys.readouterr().out
