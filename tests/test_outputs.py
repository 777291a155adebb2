"""Outputs never replace inputs: every tool that writes refuses (exit status
2, one line naming both paths), before anything is written or any model is
built, a target that is, holds or lies inside the config's dataset images or
labels, a file that is an input (hard links and symlinks count), existing
files that make_demo_data did not write itself, and two inputs whose outputs
would share a name; ``--overwrite`` lets the dataset and foreign-file cases
through, never the input ones. tools/train.py refuses a work dir among the
dataset's images or labels the same way.

Each case runs on its own tiny demo data set (the tools must not be able to
spoil the session's ``demo_root``) with a checkpoint that is never loaded.
"""
import os

import cv2
import numpy as np
import pytest
import torch
from _helpers import DET_CFG, SEG_CFG, det_data_overrides, make_demo_data, run_tool, \
    seg_data_overrides


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """A tiny demo data set of this module's own, and a checkpoint file."""
    root = tmp_path_factory.mktemp('outputs') / 'demo'
    make_demo_data.make_demo_data(str(root), num_train=1, num_val=1, size=32)
    ckpt = root.parent / 'model.pth'
    torch.save({'state_dict': {}}, ckpt)
    return root, ckpt


def digest(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file()}


def refusal(tool, out, *paths):
    """The tool's one line of refusal, which names every one of ``paths``."""
    lines = [line for line in out.splitlines() if line.startswith(f'{tool}: ')]
    assert len(lines) == 1, out[-3000:]
    assert all(str(p) in lines[0] for p in paths), lines[0]
    assert 'Traceback' not in out and 'Loads checkpoint' not in out, out[-3000:]
    return lines[0]


@pytest.mark.parametrize('config, option, where', [
    (SEG_CFG, '--out', 'ade/annotations/validation'),  # the labels folder: is
    (SEG_CFG, '--out', 'ade/annotations/validation/mine'),  # lies inside
    (SEG_CFG, '--work-dir', 'ade'),  # holds the images and labels
    (DET_CFG, '--show-dir', 'images/val'),  # pictures named as the images
    (DET_CFG, '--out', 'images/val/results.pkl'),
])
def test_test_tool_refuses_outputs_into_the_dataset(data, tmp_path, config, option, where):
    root, ckpt = data
    before = digest(root)
    target = root / where
    overrides = det_data_overrides(root) if config == DET_CFG else seg_data_overrides(root)
    extra = [] if option == '--work-dir' else ['--work-dir', tmp_path / 'work']
    rc, out = run_tool('tools/test.py', config, ckpt, option, target, *extra,
                       '--cfg-options', *overrides)
    assert rc == 2, out[-3000:]
    line = refusal('tools/test.py', out, target, '--overwrite')
    assert f'{root}/' in line.split(str(target), 1)[1]  # the dataset's path too
    assert digest(root) == before
    assert not (tmp_path / 'work').exists()


def test_test_tool_refuses_an_out_file_hard_linked_to_the_checkpoint(data, tmp_path):
    root, ckpt = data
    link = tmp_path / 'results.pkl'
    os.link(ckpt, link)
    before = ckpt.read_bytes()
    for flags in ([], ['--overwrite']):  # never, even when asked
        rc, out = run_tool('tools/test.py', SEG_CFG, ckpt, '--out', link, *flags,
                           '--work-dir', tmp_path / 'work', '--cfg-options',
                           *seg_data_overrides(root))
        assert rc == 2, out[-3000:]
        assert 'is an input of this run' in refusal('tools/test.py', out, link, ckpt)
    assert ckpt.read_bytes() == before


def test_test_tool_writes_into_the_dataset_when_asked_with_overwrite(data, tmp_path,
                                                                     monkeypatch):
    from mmvit3.cli import test as test_tool
    root, ckpt = data
    runs = []
    monkeypatch.setattr(test_tool, 'run_runner', lambda cfg, *a, **k: runs.append(cfg) or 0)
    argv = [SEG_CFG, str(ckpt), '--out', str(root / 'ade' / 'annotations' / 'validation'),
            '--work-dir', str(tmp_path / 'work'), '--cfg-options', *seg_data_overrides(root)]
    assert test_tool.main(argv) == 2 and not runs
    assert test_tool.main(argv + ['--overwrite']) == 0 and len(runs) == 1


def test_train_tool_refuses_a_work_dir_in_the_dataset(data, tmp_path, monkeypatch):
    from mmvit3.cli import train as train_tool
    root, _ = data
    runs = []
    monkeypatch.setattr(train_tool, 'run_runner', lambda cfg, *a, **k: runs.append(cfg) or 0)
    before = digest(root)
    rc, out = run_tool('tools/train.py', SEG_CFG, '--work-dir', root / 'ade',
                       '--cfg-options', *seg_data_overrides(root))
    assert rc == 2, out[-3000:]
    refusal('tools/train.py', out, root / 'ade', '--overwrite')
    for where in ('ade', 'ade/images/training/run'):  # holds the images; inside them
        argv = [SEG_CFG, '--work-dir', str(root / where), '--cfg-options',
                *seg_data_overrides(root)]
        assert train_tool.main(argv) == 2 and not runs
    assert digest(root) == before and not (root / 'ade/images/training/run').exists()
    assert train_tool.main(argv + ['--overwrite']) == 0 and len(runs) == 1


def test_make_demo_data_keeps_files_it_did_not_write(tmp_path):
    out = tmp_path / 'mine'
    (out / 'images').mkdir(parents=True)
    photo = out / 'images' / 'holiday.jpg'
    photo.write_bytes(b'my photo')
    small = ['--num-train', 1, '--num-val', 1, '--size', 32]
    rc, text = run_tool('tools/make_demo_data.py', '--out', out, *small)
    assert rc == 2, text[-3000:]
    refusal('tools/make_demo_data.py', text, out, photo, '--overwrite')
    assert photo.read_bytes() == b'my photo'
    assert not (out / 'ade').exists()

    # a folder inside images/ that is a link to the user's own: refused too
    photo.unlink()
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    (elsewhere / 'keep.jpg').write_bytes(b'keep')
    (out / 'images' / 'train').symlink_to(elsewhere)
    rc, text = run_tool('tools/make_demo_data.py', '--out', out, *small)
    assert rc == 2, text[-3000:]
    refusal('tools/make_demo_data.py', text, out, out / 'images' / 'train')

    rc, text = run_tool('tools/make_demo_data.py', '--out', out, *small, '--overwrite')
    assert rc == 0, text[-3000:]
    assert (elsewhere / 'keep.jpg').read_bytes() == b'keep'  # the link went, not its files
    assert (out / 'images' / 'train' / 'train_00000.jpg').is_file()


def test_make_demo_data_replaces_its_own_output_without_asking(tmp_path):
    out = tmp_path / 'demo'
    make_demo_data.make_demo_data(str(out), num_train=2, num_val=1, size=32)
    rc, text = run_tool('tools/make_demo_data.py', '--out', out, '--num-train', 1,
                        '--num-val', 1, '--size', 32)
    assert rc == 0, text[-3000:]
    assert not (out / 'images' / 'train' / 'train_00001.jpg').exists()
    # a file added by hand after the run: not the tool's
    (out / 'ade' / 'annotations' / 'training' / 'fixed_by_hand.png').write_bytes(b'x')
    rc, text = run_tool('tools/make_demo_data.py', '--out', out, '--size', 32)
    assert rc == 2 and 'fixed_by_hand.png' in text, text[-3000:]


def write_image(path):
    cv2.imwrite(str(path), np.full((16, 16, 3), 200, np.uint8))
    return path


def test_image_demo_refuses_an_output_hard_linked_to_an_input(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    image = write_image(images / 'a.jpg')
    before = image.read_bytes()
    (tmp_path / 'out' / 'vis').mkdir(parents=True)
    os.link(image, tmp_path / 'out' / 'vis' / 'a.jpg')  # not the same path: the same file
    rc, out = run_tool('tools/image_demo.py', images, DET_CFG, __file__,
                       '--out-dir', tmp_path / 'out', '--overwrite')
    assert rc == 2, out[-3000:]
    refusal('tools/image_demo.py', out, tmp_path / 'out' / 'vis' / 'a.jpg', image)
    assert image.read_bytes() == before


def test_image_demo_refuses_two_images_whose_predictions_share_a_name(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    first, second = write_image(images / 'a.jpg'), write_image(images / 'a.png')
    rc, out = run_tool('tools/image_demo.py', images, SEG_CFG, __file__,
                       '--out-dir', tmp_path / 'out', '--save-preds')
    assert rc == 2, out[-3000:]
    refusal('tools/image_demo.py', out, first, second, tmp_path / 'out' / 'preds' / 'a.png')
    assert not (tmp_path / 'out').exists()


def test_image_demo_refuses_an_out_dir_inside_the_dataset(data, tmp_path):
    root, _ = data
    image = write_image(tmp_path / 'a.jpg')
    target = root / 'ade' / 'images' / 'validation'
    before = digest(root)
    rc, out = run_tool('tools/image_demo.py', image, SEG_CFG, __file__, '--out-dir', target,
                       '--cfg-options', *seg_data_overrides(root))
    assert rc == 2, out[-3000:]
    refusal('tools/image_demo.py', out, target, '--overwrite')
    assert digest(root) == before
