"""The README's fine-tuning guide runs as written: its config, saved as
``configs/my_finetune.py`` next to the recipes, and its training commands,
on the demo data, starting from a file in the layout of the authors' COCO
checkpoint (the download needs the network, which tests do not have). The
commands get short-run overrides only (one epoch of two images of the tiny
demo set at 128 px, one validation image, no worker processes); on a machine without a GPU the recipe's mixed-precision
command stops with the message that names the CPU command."""
import re
import subprocess

import pytest
import torch
from _helpers import ROOT, TIMEOUT, build, demo_cfg, page_command, rope_tables, run_tool

from mmvit3 import load_checkpoint_file

SHORT = ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=2',
         'train_dataloader.dataset.indices=2', 'val_dataloader.dataset.indices=1',
         'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
         'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
         'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
         # the recipe's scales, cut from 480-800 px to 128 px for the 64 px demo images
         'train_dataloader.dataset.pipeline.3.transforms.0.0.scales=[(128,128)]',
         'train_dataloader.dataset.pipeline.3.transforms.1.2.scales=[(128,128)]',
         'val_dataloader.dataset.pipeline.1.scale=(128,128)',
         'test_dataloader.dataset.pipeline.1.scale=(128,128)']


def readme_section():
    text = (ROOT / 'README.md').read_text()
    return text[text.index('## Fine-tuning on your own COCO-format dataset'):
                text.index('## Pretrained checkpoints')]


def guide():
    """(the config, the shell commands) of the README's guide."""
    section = readme_section()
    config = re.search(r'```python\n(.*?)```', section, re.S)[1]
    commands = re.search(r'```bash\n(.*?)```', section, re.S)[1].strip().splitlines()
    return config, commands


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, demo_root):
    """A folder laid out as the guide assumes: configs/ (the recipes and
    configs/my_finetune.py), data/demo/, checkpoints/ with a COCO Mask R-CNN
    + H-ViT3-T checkpoint in the authors' released layout, tools/."""
    root = tmp_path_factory.mktemp('user')
    (root / 'configs').mkdir()
    for entry in (ROOT / 'configs').iterdir():
        (root / 'configs' / entry.name).symlink_to(entry)
    config, _ = guide()
    (root / 'configs' / 'my_finetune.py').write_text(config)
    (root / 'data').mkdir()
    (root / 'data' / 'demo').symlink_to(demo_root)
    (root / 'tools').symlink_to(ROOT / 'tools')
    cfg = demo_cfg('configs/mask_rcnn_vit3_t_coco.py', **{'model.backbone.init_cfg': None})
    torch.manual_seed(0)
    model = build(cfg)
    state = dict(model.state_dict())
    state.update(rope_tables(model.backbone, prefix='backbone.'))
    subprocess.run(page_command(r'mkdir -p checkpoints$'), cwd=root, check=True)
    torch.save({'meta': {'epoch': 12, 'iter': 87960}, 'state_dict': state},
               root / 'checkpoints' / 'mask_rcnn_vit3_t_coco.pth')
    return root


def run(args, cwd):
    """The guide's command ``args`` (a page_command) with short-run overrides."""
    assert args[0] == 'tools/train.py', args
    extra = SHORT if '--cfg-options' in args else ['--cfg-options', *SHORT]
    return run_tool(*args, *extra, '--work-dir', 'work', cwd=cwd, timeout=TIMEOUT)


def test_the_guide_shows_the_download_and_both_commands():
    _, commands = guide()
    assert commands[0] == 'mkdir -p checkpoints'
    assert commands[1].startswith('wget -O checkpoints/mask_rcnn_vit3_t_coco.pth ')
    url = commands[1].split()[-1].strip("'")
    assert f'[authors]({url})' in (ROOT / 'README.md').read_text()  # the Results table's link
    assert commands[2] == 'python tools/train.py configs/my_finetune.py'
    assert commands[3].startswith(commands[2] + ' --cfg-options optim_wrapper.type=')


def test_the_guide_fine_tunes_on_the_demo_data(workspace):
    gpu = page_command(r'python tools/train\.py configs/my_finetune\.py$')
    cpu = page_command(r'python tools/train\.py configs/my_finetune\.py --cfg-options ')
    if not torch.cuda.is_available():
        rc, out = run(gpu, workspace)
        assert rc == 2, out[-3000:]
        assert 'needs a GPU' in out and 'optim_wrapper.type=OptimWrapper' in out
    rc, out = run(cpu if not torch.cuda.is_available() else gpu, workspace)
    assert rc == 0, out[-5000:]
    assert 'Load checkpoint from checkpoints/mask_rcnn_vit3_t_coco.pth' in out
    # the class-specific layers of both heads start afresh, everything else loads
    mismatched = sorted(set(re.findall(r'size mismatch for (\S+?):', out)))
    assert mismatched == [
        'roi_head.bbox_head.fc_cls.bias', 'roi_head.bbox_head.fc_cls.weight',
        'roi_head.bbox_head.fc_reg.bias', 'roi_head.bbox_head.fc_reg.weight',
        'roi_head.mask_head.conv_logits.bias', 'roi_head.mask_head.conv_logits.weight'], out[-3000:]
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out
    saved = load_checkpoint_file(str(workspace / 'work' / 'epoch_1.pth'))
    assert saved['meta']['dataset_meta']['classes'] == ('circle', 'square')
    assert saved['state_dict']['roi_head.mask_head.conv_logits.weight'].shape[0] == 2
