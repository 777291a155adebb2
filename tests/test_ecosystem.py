"""Through the ecosystem's own doors: a config and checkpoint saved by
tools/train.py work in DetInferencer / MMSegInferencer / init_detector +
inference_detector (file path and ndarray) and in mmdet's / mmseg's own
tools/test.py, which also get checked image loading from the config's
CheckedImageLoadingHook; misspelt mmvit3 keys are errors naming the key
meant.

Trains each demo config for two iterations on the tiny demo data set
(tests/conftest.py) with tools/train.py, then runs the stock entry points
(shipped in the installed packages under .mim/tools) as subprocesses.
"""
import json
import re
import os.path as osp
import shutil
import textwrap

import cv2
import pytest
import torch
from _helpers import (DET_CFG, ROOT, SEG_CFG, det_data_overrides, run_tool,
                      seg_data_overrides, short_run_overrides)

from mmvit3 import load_checkpoint_file


def stock_tool(scope, name):
    """mmdet's / mmseg's own tools/<name>.py, as installed."""
    module = __import__(scope)
    return osp.join(osp.dirname(module.__file__), '.mim', 'tools', name)


def run_python(*args, cwd=ROOT, timeout=600):
    return run_tool(*args, cwd=cwd, timeout=timeout)


def train(config, work_dir, overrides):
    rc, out = run_tool('tools/train.py', config, '--work-dir', work_dir,
                       '--cfg-options', *short_run_overrides(), *overrides)
    assert rc == 0, out[-5000:]
    saved = work_dir / osp.basename(config)
    assert saved.is_file()
    return saved, work_dir / 'iter_2.pth'


@pytest.fixture(scope='module')
def det_run(demo_root, tmp_path_factory):
    return train(DET_CFG, tmp_path_factory.mktemp('det'),
                 det_data_overrides(demo_root))


@pytest.fixture(scope='module')
def seg_run(demo_root, tmp_path_factory):
    return train(SEG_CFG, tmp_path_factory.mktemp('seg'),
                 seg_data_overrides(demo_root))


def assert_stock_config(text):
    assert 'LoadImageFromFileChecked' not in text
    assert "type='LoadImageFromFile'" in text
    assert "type='CheckedImageLoadingHook'" in text


@pytest.mark.parametrize('run', ['det_run', 'seg_run'])
def test_saved_config_and_checkpoint_keep_the_stock_pipeline(run, request):
    cfg_file, ckpt = request.getfixturevalue(run)
    assert_stock_config(cfg_file.read_text())
    assert_stock_config(load_checkpoint_file(str(ckpt))['meta']['cfg'])


INFER_DET = textwrap.dedent('''
    import json, sys
    import mmcv
    import mmvit3  # as for any plugin; the config form imports it itself
    from mmdet.apis import DetInferencer, inference_detector, init_detector
    cfg, ckpt, img = sys.argv[1:]
    out = {}
    for name, inferencer in (
            ('config', DetInferencer(model=cfg, weights=ckpt, device='cpu')),
            ('weights', DetInferencer(weights=ckpt, device='cpu'))):
        res = inferencer([img, mmcv.imread(img)], no_save_vis=True)
        out[name] = [sorted(p) for p in res['predictions']]
    model = init_detector(cfg, ckpt, device='cpu')
    for name, x in (('path', img), ('array', mmcv.imread(img))):
        sample = inference_detector(model, x)
        out[name] = [len(sample.pred_instances), list(sample.ori_shape)]
    print('RESULT ' + json.dumps(out))
''')

INFER_SEG = textwrap.dedent('''
    import json, sys
    import mmcv
    import mmvit3
    from mmseg.apis import MMSegInferencer, inference_model, init_model
    cfg, ckpt, img = sys.argv[1:]
    out = {}
    for name, inferencer in (
            ('config', MMSegInferencer(model=cfg, weights=ckpt, device='cpu')),
            ('weights', MMSegInferencer(model=cfg, weights=ckpt,
                                        device='cpu'))):
        res = inferencer([img, mmcv.imread(img)])
        out[name] = [list(p.shape) for p in res['predictions']]
    model = init_model(cfg, ckpt, device='cpu')
    for name, x in (('path', img), ('array', mmcv.imread(img))):
        sample = inference_model(model, x)
        out[name] = list(sample.pred_sem_seg.data.shape)
    print('RESULT ' + json.dumps(out))
''')


def result_of(out):
    lines = [line for line in out.splitlines() if line.startswith('RESULT ')]
    assert lines, out[-5000:]
    return json.loads(lines[-1][len('RESULT '):])


def test_detection_inferencers_on_saved_config(det_run, demo_root, tmp_path):
    cfg_file, ckpt = det_run
    img = sorted((demo_root / 'images' / 'val').glob('*.jpg'))[0]
    script = tmp_path / 'infer.py'
    script.write_text(INFER_DET)
    rc, out = run_python(script, cfg_file, ckpt, img, cwd=tmp_path)
    assert rc == 0, out[-5000:]
    res = result_of(out)
    keys = ['bboxes', 'labels', 'masks', 'scores']
    assert res['config'] == [keys, keys] and res['weights'] == [keys, keys]
    h, w = cv2.imread(str(img)).shape[:2]
    assert res['path'][1] == [h, w] and res['array'][1] == [h, w]


def test_segmentation_inferencers_on_saved_config(seg_run, demo_root,
                                                  tmp_path):
    cfg_file, ckpt = seg_run
    img = sorted((demo_root / 'ade' / 'images' / 'validation').glob('*.jpg'))[0]
    script = tmp_path / 'infer.py'
    script.write_text(INFER_SEG)
    rc, out = run_python(script, cfg_file, ckpt, img, cwd=tmp_path)
    assert rc == 0, out[-5000:]
    res = result_of(out)
    h, w = cv2.imread(str(img)).shape[:2]
    assert res['config'] == [[h, w], [h, w]]
    assert res['path'] == [1, h, w] and res['array'] == [1, h, w]


def test_stock_mmdet_test_py_on_saved_config(det_run, tmp_path):
    cfg_file, ckpt = det_run
    rc, out = run_python(stock_tool('mmdet', 'test.py'), cfg_file, ckpt,
                         '--work-dir', tmp_path / 'w', cwd=tmp_path)
    assert rc == 0, out[-5000:]
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out
    assert 'Checked image loading' in out  # the config's hook ran


def test_stock_mmseg_test_py_on_saved_config(seg_run, tmp_path):
    cfg_file, ckpt = seg_run
    rc, out = run_python(stock_tool('mmseg', 'test.py'), cfg_file, ckpt,
                         '--work-dir', tmp_path / 'w', cwd=tmp_path)
    assert rc == 0, out[-5000:]
    assert 'mIoU' in out and 'Checked image loading' in out


def test_stock_train_py_stops_at_a_bad_image(demo_root, tmp_path):
    """mmseg's own train.py with the demo's dataloader workers (started
    before any hook runs, then restarted by the hook): a truncated JPEG
    stops the run naming the file, where mmcv's loader fails with a bare
    assertion in the worker (or decodes grey rows)."""
    ade = tmp_path / 'ade'
    (ade / 'images').mkdir(parents=True)
    shutil.copytree(demo_root / 'ade' / 'images' / 'training',
                    ade / 'images' / 'training')
    shutil.copytree(demo_root / 'ade' / 'annotations', ade / 'annotations')
    for image in (ade / 'images' / 'training').glob('*.jpg'):
        data = image.read_bytes()
        image.write_bytes(data[:len(data) // 2])
    rc, out = run_python(
        stock_tool('mmseg', 'train.py'), ROOT / SEG_CFG, '--work-dir',
        tmp_path / 'w', '--cfg-options', 'train_cfg.max_iters=1',
        'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
        'test_cfg=None', 'test_dataloader=None', 'test_evaluator=None',
        'train_dataloader.num_workers=1',
        f'train_dataloader.dataset.data_root={ade}/',
        cwd=tmp_path)
    assert rc != 0
    assert 'Bad image file' in out and 'truncated JPEG' in out, out[-3000:]
    assert str(ade / 'images' / 'training') in out
    assert not (tmp_path / 'w' / 'iter_1.pth').exists()


def test_stock_train_py_with_dataloader_workers_runs_on(demo_root, tmp_path):
    """The hook restarts the workers of an iteration-based loop; the data
    must go on past the end of an epoch (4 images, batch 4, 3 iterations)."""
    rc, out = run_python(
        stock_tool('mmseg', 'train.py'), ROOT / SEG_CFG, '--work-dir',
        tmp_path / 'w', '--cfg-options', 'train_cfg.max_iters=3',
        'train_cfg.val_interval=3', 'default_hooks.checkpoint.interval=3',
        'default_hooks.checkpoint.save_optimizer=False',
        'default_hooks.logger.interval=1', 'train_dataloader.num_workers=1',
        'train_dataloader.persistent_workers=True',
        *seg_data_overrides(demo_root), cwd=tmp_path)
    assert rc == 0, out[-5000:]
    assert 'Iter(train) [3/3]' in out and 'Checked image loading' in out
    assert (tmp_path / 'w' / 'iter_3.pth').is_file()


@pytest.mark.parametrize('key, meant', [('skip_bad_image', 'skip_bad_images'),
                                        ('trust_checkpoints',
                                         'trust_checkpoint')])
def test_misspelt_project_key_is_an_error(key, meant, tmp_path):
    rc, out = run_tool('tools/train.py', SEG_CFG, '--work-dir', tmp_path / 'w',
                       '--cfg-options', f'{key}=True')
    assert rc != 0 and 'Traceback' not in out, out[-3000:]
    assert f"Unknown config key '{key}'" in out
    assert f"did you mean '{meant}'" in out
    assert not (tmp_path / 'w').exists()


def test_misspelt_project_key_through_the_hook():
    """The same check in the hook, for runs of the stock tools."""
    from mmengine.config import Config

    from mmvit3.config import check_project_keys
    from mmvit3.engine import CheckedImageLoadingHook
    from mmvit3.errors import ProjectKeyError

    class Runner:
        cfg = Config(dict(skip_bad_image=True))

    with pytest.raises(ProjectKeyError, match="did you mean 'skip_bad_images'"):
        CheckedImageLoadingHook().before_run(Runner())
    check_project_keys(Config(dict(skip_bad_images=True, trust_checkpoint=1,
                                   data_root='x', skip=1, trust=2)))
    with pytest.raises(TypeError, match="did you mean 'skip_bad_images'"):
        CheckedImageLoadingHook(skip_bad_image=True)


def test_hook_swaps_built_loaders_through_wrappers_and_tta(demo_root):
    from mmcv.transforms import LoadImageFromFile
    from mmengine.dataset import ConcatDataset

    from _helpers import build, demo_cfg
    from mmvit3.datasets import (LoadImageFromFileChecked,
                                 use_checked_loaders)
    cfg = demo_cfg(SEG_CFG, **{
        'test_dataloader.dataset.data_root': f'{demo_root}/ade/',
        'test_dataloader.dataset.pipeline': None})
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    datasets = [build(cfg, 'DATASETS', cfg.test_dataloader.dataset)
                for _ in range(2)]
    both = ConcatDataset(datasets)
    assert use_checked_loaders(both, skip_bad_images=False) == 2
    for dataset in datasets:
        loader = dataset.pipeline.transforms[0]
        assert type(loader) is LoadImageFromFileChecked
        assert not loader.skip_bad_images
    item = both[0]
    assert len(item['inputs']) == 2  # the flips of TestTimeAug
    assert isinstance(item['inputs'][0], torch.Tensor)
    assert not any(type(t) is LoadImageFromFile
                   for t in datasets[0].pipeline.transforms)


def test_fine_tuning_example_with_another_class_count(det_run, demo_root,
                                                      tmp_path):
    """configs/demo/mask_rcnn_vit3_finetune_demo.py (the README's worked
    example): two of the demo's three classes, from a 3-class checkpoint."""
    _, ckpt = det_run
    work_dir = tmp_path / 'ft'
    rc, out = run_tool(
        'tools/train.py', 'configs/demo/mask_rcnn_vit3_finetune_demo.py',
        '--work-dir', work_dir, '--cfg-options', f'load_from={ckpt}',
        f'data_root={demo_root}/', *short_run_overrides(),
        'train_dataloader.dataset.pipeline.2.scale=(64,64)',
        'val_dataloader.dataset.pipeline.1.scale=(64,64)')
    assert rc == 0, out[-5000:]
    assert f'Load checkpoint from {ckpt}' in out
    # the class-specific layers of both heads start afresh, the rest loads
    mismatched = re.findall(r'size mismatch for (\S+?):', out)
    assert sorted(set(mismatched)) == [
        'roi_head.bbox_head.fc_cls.bias', 'roi_head.bbox_head.fc_cls.weight',
        'roi_head.bbox_head.fc_reg.bias', 'roi_head.bbox_head.fc_reg.weight',
        'roi_head.mask_head.conv_logits.bias',
        'roi_head.mask_head.conv_logits.weight'], out[-5000:]
    assert 'coco/bbox_mAP' in out
    saved = load_checkpoint_file(str(work_dir / 'iter_2.pth'))
    assert saved['meta']['dataset_meta']['classes'] == ('circle', 'square')
    state = saved['state_dict']
    assert state['roi_head.bbox_head.fc_cls.weight'].shape[0] == 2 + 1
    assert state['roi_head.mask_head.conv_logits.weight'].shape[0] == 2
    before = load_checkpoint_file(str(ckpt))['state_dict']
    key = 'backbone.patch_embed.conv.0.conv.weight'  # loaded, barely trained
    assert torch.allclose(state[key], before[key], atol=1e-3)


def test_readme_inferencer_snippet_runs(det_run, demo_root, tmp_path):
    """docs/usage.md's DetInferencer example, as written, on the files
    tools/train.py saved (linked where `make demo` puts them)."""
    readme = (ROOT / 'docs' / 'usage.md').read_text()
    snippet = next(b for b in re.findall(r'```python\n(.*?)```', readme, re.S)
                   if 'DetInferencer(' in b)
    cfg_file, ckpt = det_run
    work = tmp_path / 'work_dirs' / 'mask_rcnn_vit3_demo'
    work.mkdir(parents=True)
    (work / 'mask_rcnn_vit3_demo.py').symlink_to(cfg_file)
    (work / 'iter_360.pth').symlink_to(ckpt)
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'demo').symlink_to(demo_root)
    image = demo_root / 'images' / 'val' / 'val_00001.jpg'
    assert image.is_file()
    script = tmp_path / 'snippet.py'
    script.write_text(snippet + "\nprint('RESULT', sorted(result['predictions'][0]))\n")
    rc, out = run_python(script, cwd=tmp_path)
    assert rc == 0, out[-5000:]
    assert "RESULT ['bboxes', 'labels', 'masks', 'scores']" in out
    assert (tmp_path / 'outputs' / 'vis' / 'val_00001.jpg').is_file()
