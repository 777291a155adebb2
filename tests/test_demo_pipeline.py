"""The demo pipeline end to end on CPU: tools/make_demo_data.py writes a tiny
data set, tools/train.py trains each demo config for two iterations and
saves a checkpoint, tools/test.py loads it and prints the metrics; plus the
missing-dataset message and the data generator's determinism.

Runs tools as subprocesses from the repository root, as a user would (each
spends a few seconds importing mmdet / mmseg); helpers in tests/_helpers.py,
the tiny data set (``demo_root``) in tests/conftest.py.
"""
import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _helpers import (DET_CFG, ROOT, SEG_CFG, det_data_overrides,
                      loader_overrides, make_demo_data, page_command, run_tool,
                      seg_data_overrides, short_run_overrides)
from mmengine.config import Config


def _tree_digest(root: Path):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob('*')) if p.is_file()
    }


# --------------------------------------------------------------------------
# make_demo_data


def test_make_demo_data_is_deterministic(tmp_path):
    args = dict(seed=3, num_train=3, num_val=2, size=64)
    make_demo_data.make_demo_data(str(tmp_path / 'a'), **args)
    make_demo_data.make_demo_data(str(tmp_path / 'b'), **args)
    make_demo_data.make_demo_data(str(tmp_path / 'c'), **{**args, 'seed': 4})
    a, b, c = (_tree_digest(tmp_path / x) for x in 'abc')
    # 2 json + (coco jpg, ade jpg, ade png) each + the list of what was written
    assert len(a) == 2 + 3 * 5 + 1
    assert a == b
    assert a.keys() == c.keys() and a != c

    # image i does not depend on how many images are written
    make_demo_data.make_demo_data(str(tmp_path / 'd'), **{**args,
                                                          'num_train': 1})
    d = _tree_digest(tmp_path / 'd')
    assert d['images/train/train_00000.jpg'] == a['images/train/train_00000.jpg']


@pytest.mark.filterwarnings('ignore::DeprecationWarning')  # pycocotools, numpy 2
def test_make_demo_data_layout(demo_root):
    from pycocotools.coco import COCO
    coco = COCO(str(demo_root / 'annotations' / 'instances_train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == \
        list(make_demo_data.CLASSES)
    assert len(coco.imgs) == 4 and len(coco.anns) >= 4
    for ann in coco.anns.values():
        img = coco.imgs[ann['image_id']]
        stem = Path(img['file_name']).stem
        assert (demo_root / 'images' / 'train' / img['file_name']).is_file()
        label = cv2.imread(
            str(demo_root / 'ade' / 'annotations' / 'training' /
                f'{stem}.png'), cv2.IMREAD_UNCHANGED)
        assert label.shape == (img['height'], img['width'])
        assert label.dtype == np.uint8
        assert set(np.unique(label)) <= {0, 1, 2, 3}
        # the polygon is exactly the labelled region of that shape
        mask = coco.annToMask(ann).astype(bool)
        assert mask.sum() == ann['area'] > 0
        assert (label[mask] == ann['category_id']).all()
        assert (demo_root / 'ade' / 'images' / 'training' /
                f'{stem}.jpg').is_file()
        # the box is the mask's extent
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann['bbox']
        assert abs(x - xs.min()) <= 1 and abs(y - ys.min()) <= 1
        assert abs(x + w - xs.max() - 1) <= 1.5 and abs(y + h - ys.max() - 1) <= 1.5
    # every labelled pixel belongs to an annotation of its class, and the
    # shapes are what the image shows: their pixels differ from the background
    for img in coco.imgs.values():
        stem = Path(img['file_name']).stem
        label = cv2.imread(str(demo_root / 'ade' / 'annotations' / 'training' / f'{stem}.png'),
                           cv2.IMREAD_UNCHANGED)
        pixels = cv2.imread(str(demo_root / 'images' / 'train' / img['file_name'])).astype(float)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
        for cat in (1, 2, 3):
            union = np.zeros(label.shape, bool)
            for ann in anns:
                if ann['category_id'] == cat:
                    union |= coco.annToMask(ann).astype(bool)
            assert (union == (label == cat)).all(), (stem, cat)
        for ann in anns:
            mask = coco.annToMask(ann).astype(bool)
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & \
                ~mask & (label == 0)
            if ring.sum() >= 10 and mask.sum() >= 10:
                inside, outside = pixels[mask].mean(0), pixels[ring].mean(0)
                assert np.abs(inside - outside).max() > 10, (stem, ann['id'])


# --------------------------------------------------------------------------
# missing data


def test_missing_dataset_message_names_path_and_demo(tmp_path):
    missing = tmp_path / 'no_such_coco'
    rc, out = run_tool('tools/train.py', DET_CFG, '--work-dir', tmp_path / 'w',
                       '--cfg-options',
                       *loader_overrides('dataset.', data_root=f'{missing}/'))
    assert rc == 2, out
    assert str(missing) in out
    assert 'make_demo_data.py' in out
    assert 'Traceback' not in out
    assert not (tmp_path / 'w').exists()  # stopped before the Runner


def test_missing_dataset_message_for_real_data(tmp_path):
    from mmvit3.datasets import check_data
    from mmvit3.errors import DatasetNotFoundError

    cfg = Config(
        dict(
            default_scope='mmdet',
            train_dataloader=dict(
                dataset=dict(
                    type='RepeatDataset',
                    times=2,
                    dataset=dict(
                        type='CocoDataset',
                        data_root=str(tmp_path / 'coco') + '/',
                        ann_file='annotations/instances_train2017.json',
                        data_prefix=dict(img='train2017/')))),
            val_evaluator=dict(
                type='CocoMetric',
                ann_file=str(tmp_path / 'ann' / 'instances_val2017.json'))))
    with pytest.raises(DatasetNotFoundError) as info:
        check_data(cfg)
    msg = str(info.value)
    assert str(tmp_path / 'coco') in msg
    assert 'train_dataloader.dataset.dataset.data_root' in msg
    assert str(tmp_path / 'ann' / 'instances_val2017.json') in msg
    assert 'COCO 2017' in msg and 'make_demo_data.py' in msg
    assert isinstance(info.value, FileNotFoundError)

    # with the data root present, the missing annotation file is named
    (tmp_path / 'coco' / 'train2017').mkdir(parents=True)
    (tmp_path / 'ann').mkdir()
    (tmp_path / 'ann' / 'instances_val2017.json').write_text('{}')
    with pytest.raises(DatasetNotFoundError) as info:
        check_data(cfg)
    assert [p for _, p in info.value.missing] == [
        str(tmp_path / 'coco' / 'annotations' / 'instances_train2017.json')
    ]
    (tmp_path / 'coco' / 'annotations').mkdir()
    (tmp_path / 'coco' / 'annotations' / 'instances_train2017.json').write_text(
        '{}')
    check_data(cfg)


def test_missing_ade_message():
    from mmvit3.datasets import check_data
    from mmvit3.errors import DatasetNotFoundError

    cfg = Config.fromfile(str(ROOT / SEG_CFG))
    cfg.merge_from_dict({
        f'{s}_dataloader.dataset.data_root': '/nonexistent/ADEChallengeData2016'
        for s in ('train', 'val', 'test')
    })
    cfg.merge_from_dict({
        f'{s}_dataloader.dataset.type': 'ADE20KDataset'
        for s in ('train', 'val', 'test')
    })
    with pytest.raises(DatasetNotFoundError) as info:
        check_data(cfg, ['train'])
    assert '/nonexistent/ADEChallengeData2016' in str(info.value)
    assert 'ADEChallengeData2016.zip' in str(info.value)


# --------------------------------------------------------------------------
# train -> checkpoint -> test


def test_the_detection_demo_learns(tmp_path):
    """The demo page's commands (train, test, picture), the run cut to 40
    iterations (warm-up 5) on 16 images of 128 px: tools/test.py's box and
    mask AP clear a floor the untrained model does not reach (0.0 / 0.0
    untrained, 13.1 / 17.5 after the 40 iterations on an AMD EPYC with 2
    threads; the run is seeded)."""
    root = tmp_path / 'demo'
    make_demo_data.make_demo_data(str(root), seed=0, num_train=16, num_val=8, size=128)
    work = tmp_path / 'det'
    data = det_data_overrides(root)
    rc, out = run_tool(*page_command(r'python tools/train\.py configs/demo/mask_rcnn_vit3_demo\.py '
                                     r'--work-dir', {r'work_dirs/\S+': work}),
                       '--cfg-options', *short_run_overrides(), 'train_cfg.max_iters=40',
                       # evaluated by the page's tools/test.py below, not twice
                       'train_cfg.val_interval=1000', 'default_hooks.checkpoint.interval=40',
                       'param_scheduler.0.end=5', 'param_scheduler.1.begin=5',
                       'param_scheduler.1.end=40', *data)
    assert rc == 0, out[-5000:]
    ckpt = work / 'iter_40.pth'
    assert ckpt.is_file(), out[-3000:]

    dump = tmp_path / 'det_results.pkl'
    rc, out = run_tool(*page_command(r'python tools/test\.py configs/demo/mask_rcnn_vit3_demo\.py ',
                                     {r'work_dirs/\S+\.pth': ckpt,
                                      r'work_dirs/\S+': tmp_path / 'det_test'}),
                       '--out', dump, '--cfg-options',
                       *loader_overrides('', num_workers=0, persistent_workers=False), *data)
    assert rc == 0, out[-5000:]
    assert 'bbox_mAP_copypaste' in out and dump.is_file()
    box, mask = (float(re.findall(rf'coco/{k}_mAP: ([\d.]+)', out)[-1]) for k in ('bbox', 'segm'))
    assert box >= 0.05 and mask >= 0.05, out[-3000:]

    # the picture of one validation image's predictions
    rc, out = run_tool(*page_command(
        r'python tools/image_demo\.py data/demo/images/val/\S+ configs/demo/mask_rcnn_vit3_demo\.py',
        {r'data/demo/images/val/val_\d+\.jpg': root / 'images' / 'val' / 'val_00001.jpg',
         r'work_dirs/\S+\.pth': ckpt, r'work_dirs/\S+': tmp_path / 'pictures'}))
    assert rc == 0, out[-5000:]
    assert len(list((tmp_path / 'pictures' / 'vis').glob('val_*.jpg'))) == 1, out[-3000:]


def test_the_demo_picture_names_what_its_image_shows(tmp_path):
    """The picture of `make demo` (docs/demo.md's last command, its own
    checkpoint and image): one detection over the score threshold per shape
    of the image, each of the shape's class. Needs `make demo`'s trained
    checkpoint, which only a finished `make demo` leaves (skipped without)."""
    import json
    args = page_command(r'python tools/image_demo\.py data/demo/images/val/\S+ '
                        r'configs/demo/mask_rcnn_vit3_demo\.py',
                        {r'work_dirs/\S+/pictures': tmp_path / 'pictures'})
    image, ckpt = ROOT / args[1], ROOT / args[3]
    ann_file = ROOT / 'data' / 'demo' / 'annotations' / 'instances_val.json'
    if not (ckpt.is_file() and image.is_file() and ann_file.is_file()):
        pytest.skip('needs `make demo` run in this checkout')
    rc, out = run_tool(*args, '--save-preds')
    assert rc == 0, out[-5000:]
    pred = json.loads((tmp_path / 'pictures' / 'preds' / f'{image.stem}.json').read_text())
    coco = json.loads(ann_file.read_text())
    names = {c['id']: c['name'] for c in coco['categories']}
    image_id = next(i['id'] for i in coco['images'] if i['file_name'] == image.name)
    truth = sorted(names[a['category_id']] for a in coco['annotations']
                   if a['image_id'] == image_id)
    classes = Config.fromfile(str(ROOT / args[2])).metainfo['classes']
    shown = sorted(classes[label] for label, score in zip(pred['labels'], pred['scores'])
                   if score >= 0.3)  # image_demo.py's default --score-thr
    assert len(set(truth)) == 3 and shown == truth, (shown, truth)


def test_cascade_demo_trains_and_tests(demo_root, tmp_path):
    """The demo page's train / test commands with the cascade config."""
    config = 'configs/demo/cascade_mask_rcnn_vit3_demo.py'
    work = tmp_path / 'det'
    data = det_data_overrides(demo_root)
    demo = r'configs/demo/mask_rcnn_vit3_demo\.py'
    rc, out = run_tool(*page_command(r'python tools/train\.py configs/demo/mask_rcnn_vit3_demo\.py '
                                     r'--work-dir', {demo: config, r'work_dirs/\S+': work}),
                       '--cfg-options', *short_run_overrides(), *data)
    assert rc == 0, out[-5000:]
    ckpt = work / 'iter_2.pth'
    assert ckpt.is_file(), out[-3000:]

    rc, out = run_tool(*page_command(r'python tools/test\.py configs/demo/mask_rcnn_vit3_demo\.py ',
                                     {demo: config, r'work_dirs/\S+\.pth': ckpt,
                                      r'work_dirs/\S+': tmp_path / 'det_test'}),
                       '--cfg-options',
                       *loader_overrides('', num_workers=0, persistent_workers=False), *data)
    assert rc == 0, out[-5000:]
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out


def test_the_segmentation_demo_learns_resumes_and_tests(tmp_path):
    """The segmentation demo as the page runs it, cut to 40 iterations on 16
    images of 64 px: its validation mIoU clears a floor that the untrained
    model does not reach (mIoU 10.6 and a mean IoU of the shapes of 1.0
    untrained, 40.6 and 23.9 after the 40 iterations on an AMD EPYC with 2
    threads; the run is seeded), and its pictures draw the shapes only. Then
    ``--resume`` goes on from the latest checkpoint, the page's tools/test.py
    writes a label map per image, and the checkpoint against another arch is
    a clear error."""
    root = tmp_path / 'demo'
    make_demo_data.make_demo_data(str(root), seed=0, num_train=16, num_val=8, size=64)
    work, data = tmp_path / 'seg', seg_data_overrides(root)
    run = [*[o for o in short_run_overrides() if 'batch_size' not in o],
           'train_cfg.val_interval=40', 'default_hooks.checkpoint.interval=40',
           'train_dataloader.batch_size=4', *data]
    rc, out = run_tool(*page_command(r'python tools/train\.py configs/demo/upernet_vit3_demo\.py'),
                       '--work-dir', work, '--cfg-options', *run, 'train_cfg.max_iters=40')
    assert rc == 0, out[-5000:]
    miou = float(re.findall(r'mIoU: ([\d.]+)', out)[-1])
    shapes = [float(re.search(rf'\|\s+{c}\s+\|\s+([\d.]+)', out)[1])
              for c in ('circle', 'square', 'triangle')]
    # calling every pixel background gives mIoU 23 and shape IoU 0 here
    assert miou >= 30 and sum(shapes) / 3 >= 10, out[-3000:]

    # its pictures paint the shapes and leave the background as it is (only
    # darkened by the label map's opacity, 0.5): the background is no class
    # to draw, though the model predicts it
    images = root / 'ade' / 'images' / 'validation'
    rc, out = run_tool(*page_command(r'python tools/image_demo\.py data/demo/ade/\S+ '
                                     r'configs/demo/upernet_vit3_demo\.py',
                                     {r'data/demo/ade/\S+': images,
                                      r'work_dirs/\S+\.pth': tmp_path / 'seg' / 'iter_40.pth',
                                      r'work_dirs/\S+': tmp_path / 'pictures'}),
                       '--save-preds')
    assert rc == 0, out[-5000:]
    painted = []
    for image in sorted(images.glob('*.jpg')):
        label = cv2.imread(str(tmp_path / 'pictures' / 'preds' / f'{image.stem}.png'),
                           cv2.IMREAD_UNCHANGED)
        source = cv2.imread(str(image)).astype(float)
        drawn = cv2.imread(str(tmp_path / 'pictures' / 'vis' / image.name)).astype(float)
        background = label == 0
        assert background.mean() > 0.3, image  # the model says where no shape is
        off = np.abs(drawn - 0.5 * source).max(-1)
        assert np.median(off[background]) < 8, image  # not painted
        if (~background).any():
            painted.append(np.median(off[~background]))
    assert painted and min(painted) > 20  # the shapes' pixels are

    # --resume without a value: the latest checkpoint in the work dir
    rc, out = run_tool('tools/train.py', SEG_CFG, '--work-dir', work, '--resume',
                       '--cfg-options', *run, 'train_cfg.max_iters=41')
    assert rc == 0, out[-5000:]
    assert 'resumed' in out.lower() and 'iter: 40' in out, out[-3000:]
    ckpt = work / 'iter_41.pth'
    assert ckpt.is_file(), out[-3000:]

    rc, out = run_tool(*page_command(r'python tools/test\.py configs/demo/upernet_vit3_demo\.py ',
                                     {r'work_dirs/\S+\.pth': ckpt}),
                       '--work-dir', tmp_path / 'seg_test', '--out', tmp_path / 'seg_png',
                       '--cfg-options',
                       *loader_overrides('', num_workers=0, persistent_workers=False), *data)
    assert rc == 0, out[-5000:]
    assert 'mIoU' in out and 'aAcc' in out
    assert len(list((tmp_path / 'seg_png').glob('*.png'))) == 8

    # the checkpoint with another backbone arch: a clear error, no evaluation
    rc, out = run_tool('tools/test.py', SEG_CFG, ckpt, '--work-dir',
                       tmp_path / 'seg_test_small', '--cfg-options', 'model.backbone.arch=small',
                       *loader_overrides('', num_workers=0, persistent_workers=False), *data)
    assert rc == 2, out[-5000:]
    assert 'holds a ViT3 tiny, the model is a ViT3 small: set arch' in out, out[-3000:]
    assert str(ckpt) in out and 'Traceback' not in out and 'aAcc' not in out


def test_test_tool_rejects_missing_checkpoint(tmp_path):
    rc, out = run_tool('tools/test.py', SEG_CFG, tmp_path / 'nope.pth')
    assert rc == 2 and 'nope.pth' in out


def test_train_flags_edit_config(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv('LOCAL_RANK', '0')
    from mmvit3.cli import train
    args = train.parse_args([DET_CFG, '--amp', '--auto-scale-lr', '--resume'])
    cfg = train.build_cfg(args)
    # --amp: mmengine's AmpOptimWrapper on a GPU, bfloat16 autocast without one
    assert cfg.optim_wrapper.type == ('AmpOptimWrapper' if torch.cuda.is_available()
                                      else 'BF16AmpOptimWrapper')
    assert cfg.auto_scale_lr.enable is True
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.work_dir.endswith('mask_rcnn_vit3_demo')
    args = train.parse_args([SEG_CFG, '--resume', 'x.pth'])
    cfg = train.build_cfg(args)
    assert cfg.resume is True and cfg.load_from == 'x.pth'
    assert cfg.default_scope == 'mmseg'


def test_tensorboard_switch(monkeypatch, demo_root, tmp_path):
    import importlib.util

    # the usage page's command, run: refused naming the install where
    # tensorboard is missing, else training with its event files
    command = page_command(r'python tools/train\.py \S+ --tensorboard$')
    rc, out = run_tool(*command, '--work-dir', tmp_path, '--cfg-options',
                       *short_run_overrides(), *det_data_overrides(demo_root))
    if importlib.util.find_spec('tensorboard') is None:
        assert rc == 2 and 'pip install tensorboard' in out, out[-3000:]
    else:
        assert rc == 0 and list(tmp_path.rglob('events.out.tfevents.*')), out[-3000:]

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv('LOCAL_RANK', '0')
    from mmvit3.cli import train
    from mmvit3.errors import ConfigError
    args = train.parse_args(command[1:])
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *rest):
        return None if name == 'tensorboard' else real_find_spec(name, *rest)

    with monkeypatch.context() as m:
        m.setattr(importlib.util, 'find_spec', find_spec)
        with pytest.raises(ConfigError, match='pip install tensorboard'):
            train.build_cfg(args)

    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *rest: object() if name == 'tensorboard'
                        else real_find_spec(name, *rest))
    cfg = train.build_cfg(args)
    types = [b['type'] for b in cfg.visualizer.vis_backends]
    assert types == ['LocalVisBackend', 'TensorboardVisBackend']
    # without the flag: the config's backends only
    assert 'TensorboardVisBackend' not in str(
        train.build_cfg(train.parse_args(command[1:-1])).visualizer)
