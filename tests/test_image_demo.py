"""Seeing the results: tools/image_demo.py draws (and on request saves) the
predictions of each demo config on images through DetInferencer /
MMSegInferencer, refuses a checkpoint of another task or arch and an output
that would replace an input (exit status 2), and a checkpoint in the layout of the authors' released
COCO / ADE20K models (mmengine format, ``backbone.`` + spec names, with the
``rope.rotations`` tables) evaluates with tools/test.py and no missing or
unexpected keys.

Runs tools as subprocesses on the tiny demo data set (tests/conftest.py),
with randomly initialised models: drawing does not need a good model.
"""
import json

import cv2
import numpy as np
import pytest
import torch
from _helpers import (DET_CFG, ROOT, SEG_CFG, TrainingNote,
                      det_data_overrides, loader_overrides,
                      page_command, rope_tables, run_tool)
from mmengine.config import Config

from mmvit3.analysis import build_model

NO_WORKERS = loader_overrides('', num_workers=0, persistent_workers=False)


def released_layout(config, path):
    """Save a randomly initialised model of ``config`` as the authors
    release theirs: ``{'meta': {..., 'dataset_meta'}, 'state_dict'}`` with
    ``backbone.`` keys and the RoPE tables."""
    cfg = Config.fromfile(str(ROOT / config))
    torch.manual_seed(0)
    model = build_model(cfg)
    state_dict = model.state_dict()
    state_dict.update(rope_tables(model.backbone, 'backbone.'))
    meta = dict(
        dataset_meta=dict(cfg.test_dataloader.dataset.metainfo),
        iter=360,
        mmengine_version='0.10.7')
    torch.save({'meta': meta, 'state_dict': state_dict}, path)
    return path


@pytest.fixture(scope='module')
def det_checkpoint(tmp_path_factory):
    return released_layout(DET_CFG,
                           tmp_path_factory.mktemp('ckpt') / 'mask_rcnn.pth')


def assert_clean_load(out):
    lowered = out.lower()
    assert 'unexpected key' not in lowered, out[-3000:]
    assert 'missing keys' not in lowered, out[-3000:]
    dropped = [line for line in out.splitlines() if 'rope.rotations' in line]
    assert len(dropped) == 1 and 'dropped 17' in dropped[0], dropped
    assert 'INFO' in dropped[0]


def assert_pictures(images, out_dir):
    """One picture per image in out_dir/vis, named as the image, of its
    size, and with something drawn on it."""
    for image in images:
        picture = out_dir / 'vis' / image.name
        assert picture.is_file(), sorted(out_dir.rglob('*'))
        drawn = cv2.imread(str(picture))
        source = cv2.imread(str(image))
        assert drawn.shape == source.shape
        diff = np.abs(drawn.astype(np.int16) - source.astype(np.int16))
        assert (diff.max(axis=-1) > 40).mean() > 0.01  # not JPEG noise


def test_released_detection_checkpoint_evaluates_cleanly(
        demo_root, det_checkpoint, tmp_path):
    rc, out = run_tool('tools/test.py', DET_CFG, det_checkpoint, '--work-dir',
                       tmp_path, '--cfg-options', *NO_WORKERS,
                       *det_data_overrides(demo_root))
    assert rc == 0, out[-5000:]
    assert_clean_load(out)
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out


def test_image_demo_detection_folder(demo_root, det_checkpoint, tmp_path):
    images = sorted((demo_root / 'images' / 'val').glob('*.jpg'))
    assert len(images) == 2
    out_dir = tmp_path / 'pictures'
    # score threshold 0: a random model's detections score low
    rc, out = run_tool(*page_command(r'python tools/image_demo\.py data/demo/images/val ',
                                     {r'data/demo/(.*)': f'{demo_root}/\\1',
                                      r'work_dirs/\S+\.pth': det_checkpoint,
                                      'outputs': out_dir}),
                       '--score-thr', 0, '--cfg-options',
                       'test_dataloader.dataset.pipeline.1.scale=(128,128)')
    assert rc == 0, out[-5000:]
    assert_clean_load(out)
    assert_pictures(images, out_dir)
    assert (f'Saved 2 pictures of the predictions to {out_dir}/vis/ and the '
            f'predictions to {out_dir}/preds/') in out
    assert 'Inference' in out  # the inferencer's progress bar
    for image in images:
        pred = json.loads((out_dir / 'preds' / f'{image.stem}.json').read_text())
        assert set(pred) >= {'labels', 'scores', 'bboxes', 'masks'}
        assert len(pred['labels']) == len(pred['scores']) == \
            len(pred['bboxes']) == len(pred['masks']) > 0
        assert all(0 <= label < 3 for label in pred['labels'])


def test_image_demo_segmentation_image(demo_root, tmp_path):
    """The demo page's command on the validation folder, with --save-preds."""
    ckpt = released_layout(SEG_CFG, tmp_path / 'upernet.pth')
    images = sorted((demo_root / 'ade' / 'images' / 'validation').glob('*.jpg'))
    image = images[0]
    out_dir = tmp_path / 'pictures'
    rc, out = run_tool(*page_command(r'python tools/image_demo\.py data/demo/ade/\S+ '
                                     r'configs/demo/upernet_vit3_demo\.py',
                                     {r'data/demo/(.*)': f'{demo_root}/\\1',
                                      r'work_dirs/\S+\.pth': ckpt, r'work_dirs/\S+': out_dir}),
                       '--save-preds')
    assert rc == 0, out[-5000:]
    assert_clean_load(out)
    assert_pictures(images, out_dir)
    for image in images:
        label = cv2.imread(str(out_dir / 'preds' / f'{image.stem}.png'),
                           cv2.IMREAD_UNCHANGED)
        assert label.shape == cv2.imread(str(image)).shape[:2]
        assert label.dtype == np.uint8 and label.max() < 4  # background + 3 shapes

    # a detector's checkpoint in the segmentation config: refused, exit 2
    det = released_layout(DET_CFG, tmp_path / 'det.pth')
    rc, out = run_tool('tools/image_demo.py', image, SEG_CFG, det,
                       '--out-dir', tmp_path / 'refused')
    assert rc == 2, out[-3000:]
    assert 'is for another model' in out and 'Traceback' not in out
    assert 'auxiliary_head' in out and 'neck' in out  # the parts that differ
    assert not (tmp_path / 'refused').exists()


def test_image_demo_refuses_other_arch_and_pickles(demo_root, tmp_path):
    image = sorted((demo_root / 'images' / 'val').glob('*.jpg'))[0]
    small = tmp_path / 'small.pth'
    cfg = Config.fromfile(str(ROOT / DET_CFG))
    cfg.model.backbone.arch = 'small'
    torch.save({'state_dict': build_model(cfg).state_dict()}, small)
    rc, out = run_tool('tools/image_demo.py', image, DET_CFG, small,
                       '--out-dir', tmp_path / 'a')
    assert rc == 2 and 'Traceback' not in out, out[-3000:]
    assert 'a ViT3 small, the model is a ViT3 tiny' in out
    assert not (tmp_path / 'a').exists()

    pickled = tmp_path / 'pickled.pth'
    torch.save({'state_dict': {}, 'note': TrainingNote('hi')}, pickled)
    rc, out = run_tool('tools/image_demo.py', image, DET_CFG, pickled,
                       '--out-dir', tmp_path / 'b')
    assert rc == 2 and 'Traceback' not in out, out[-3000:]
    assert '--trust-checkpoint' in out


def test_image_demo_never_writes_over_an_input(tmp_path, capsys):
    from mmvit3.cli import image_demo
    folder = tmp_path / 'vis'
    folder.mkdir()
    image = folder / 'a.jpg'
    cv2.imwrite(str(image), np.full((16, 16, 3), 200, np.uint8))
    before = image.read_bytes()
    # pictures go to OUT/vis/<name>: OUT = the folder's parent would replace it
    assert image_demo.main([str(folder), str(ROOT / DET_CFG), __file__,
                            '--out-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f'would replace the input image {image}' in err
    assert image.read_bytes() == before


def test_image_demo_bad_input_is_a_clear_error(tmp_path, capsys):
    from mmvit3.cli import image_demo
    cfg = str(ROOT / DET_CFG)
    missing = tmp_path / 'nothing_here.jpg'
    assert image_demo.main([str(missing), cfg, 'x.pth']) == 2
    err = capsys.readouterr().err
    assert 'No images found' in err and str(missing) in err
    (tmp_path / 'notes.txt').write_text('not an image')
    assert image_demo.main([str(tmp_path), cfg, 'x.pth']) == 2
    assert 'No images found' in capsys.readouterr().err

    image = tmp_path / 'a.png'
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    ckpt = tmp_path / 'nope.pth'
    assert image_demo.main([str(image), cfg, str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert 'Checkpoint not found' in err and str(ckpt) in err
