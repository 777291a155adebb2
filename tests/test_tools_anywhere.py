"""The tools from any working directory: one ``--cfg-options data_root=``
reaches every dataloader and evaluator, relative paths missing here but
present in the repository resolve against it, and the missing-data message
suggests commands that exist where the user is."""
import re

from _helpers import DET_CFG, ROOT, run_tool, short_run_overrides
from mmengine.config import Config

from mmvit3.cli.paths import commands_from_here, propagate_data_root, resolve_against_repo


def run_from(cwd, *args):
    return run_tool(*args, cwd=cwd, timeout=600)


def test_one_data_root_override_from_another_directory(demo_root, tmp_path):
    rc, out = run_from(
        tmp_path, ROOT / 'tools' / 'train.py', ROOT / DET_CFG, '--cfg-options',
        f'data_root={demo_root}/', *short_run_overrides(),
        'train_dataloader.dataset.pipeline.2.scale=(64,64)',
        'val_dataloader.dataset.pipeline.1.scale=(64,64)')
    assert rc == 0, out[-5000:]
    assert 'coco/bbox_mAP' in out  # the evaluator read the new ann_file
    work_dir = tmp_path / 'work_dirs' / 'mask_rcnn_vit3_demo'
    assert (work_dir / 'iter_2.pth').is_file()
    saved = Config.fromfile(str(work_dir / 'mask_rcnn_vit3_demo.py'))
    for split in ('train', 'val', 'test'):
        assert saved[f'{split}_dataloader'].dataset.data_root == f'{demo_root}/'
    assert saved.val_evaluator.ann_file == \
        f'{demo_root}/annotations/instances_val.json'


def test_missing_data_message_from_another_directory(tmp_path):
    missing = tmp_path / 'nowhere' / 'demo'
    rc, out = run_from(tmp_path, ROOT / 'tools' / 'train.py', ROOT / DET_CFG,
                       '--cfg-options', f'data_root={missing}/')
    assert rc == 2 and 'Traceback' not in out, out[-3000:]
    assert str(missing) in out
    assert '--cfg-options data_root=PATH/' in out
    commands = re.findall(r'python (\S+\.py)( \S+\.py)?', out)
    assert commands
    for script, config in commands:  # every suggested file exists from here
        assert (tmp_path / script).is_file(), (script, out)
        if config:
            assert (tmp_path / config.strip()).is_file(), (config, out)


def test_relative_paths_resolve_against_the_repository(tmp_path):
    repo = tmp_path / 'repo'
    for d in ('configs', 'tools', 'data/demo/annotations', 'pretrained'):
        (repo / d).mkdir(parents=True)
    (repo / 'data/demo/annotations/val.json').write_text('{}')
    (repo / 'pretrained/w.pth').write_bytes(b'')
    here = tmp_path / 'elsewhere'
    (here / 'data/local').mkdir(parents=True)
    cfg = Config(dict(
        train_dataloader=dict(dataset=dict(
            type='RepeatDataset',
            dataset=dict(data_root='data/demo/', ann_file='a.json'))),
        val_dataloader=dict(dataset=dict(data_root='data/local/')),
        test_dataloader=dict(dataset=dict(data_root='data/none/')),
        val_evaluator=dict(ann_file='data/demo/annotations/val.json'),
        model=dict(backbone=dict(init_cfg=dict(checkpoint='pretrained/w.pth')))))
    changed = resolve_against_repo(cfg, str(repo), str(here))
    assert sorted(changed) == [
        'model.backbone.init_cfg.checkpoint',
        'train_dataloader.dataset.data_root', 'val_evaluator.ann_file']
    assert cfg.train_dataloader.dataset.dataset.data_root == \
        f'{repo}/data/demo/'
    assert cfg.val_dataloader.dataset.data_root == 'data/local/'  # here wins
    assert cfg.test_dataloader.dataset.data_root == 'data/none/'  # nowhere
    assert cfg.val_evaluator.ann_file == f'{repo}/data/demo/annotations/val.json'
    assert cfg.model.backbone.init_cfg.checkpoint == f'{repo}/pretrained/w.pth'
    # from the repository itself nothing changes
    assert resolve_against_repo(Config(dict(val_evaluator=dict(
        ann_file='data/demo/annotations/val.json'))), str(repo), str(repo)) == []


def test_data_root_override_keeps_explicit_ones():
    cfg = Config(dict(
        data_root='/new/',
        train_dataloader=dict(dataset=dict(data_root='data/demo/')),
        val_dataloader=dict(dataset=dict(data_root='/mine/')),
        val_evaluator=[dict(ann_file='data/demo/annotations/v.json'),
                       dict(ann_file='/other/v.json')]))
    assert propagate_data_root(cfg, 'data/demo/', '/new/') == 2
    assert cfg.train_dataloader.dataset.data_root == '/new/'
    assert cfg.val_dataloader.dataset.data_root == '/mine/'
    assert [m.ann_file for m in cfg.val_evaluator] == [
        '/new/annotations/v.json', '/other/v.json']


def test_commands_from_here():
    text = 'run\n    python tools/make_demo_data.py --out data/demo\n' \
           '    python tools/train.py configs/demo/x.py'
    assert commands_from_here(text, '/r', '/r') == text
    assert commands_from_here(text, '/r', '/elsewhere') == (
        'run\n    python /r/tools/make_demo_data.py --out data/demo\n'
        '    python /r/tools/train.py /r/configs/demo/x.py')
