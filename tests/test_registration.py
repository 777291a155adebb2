"""`custom_imports=dict(imports=['mmvit3'])` is all a config needs, in
MMDetection and in MMSegmentation (each run in a fresh interpreter, so the
import really comes from the config)."""
import subprocess
import sys

import pytest

DET_CONFIG = """
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvit3'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='ViT3', arch='tiny'),
    neck=dict(in_channels=[64, 128, 320, 512]))
"""

SEG_CONFIG = """
_base_ = 'mmseg::_base_/models/upernet_swin.py'
custom_imports = dict(imports=['mmvit3'], allow_failed_imports=False)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(_delete_=True, type='ViT3', arch='tiny'),
    decode_head=dict(in_channels=[64, 128, 320, 512], norm_cfg=norm_cfg, num_classes=150),
    auxiliary_head=dict(in_channels=320, norm_cfg=norm_cfg, num_classes=150))
"""

BUILD = """
import sys
import torch
from mmengine.config import Config
cfg = Config.fromfile(sys.argv[1])
assert 'mmvit3' in sys.modules, 'custom_imports did not import mmvit3'
from {scope}.registry import MODELS
from {scope}.utils import register_all_modules
register_all_modules()
model = MODELS.build(cfg.model).eval()
assert type(model.backbone).__name__ == 'ViT3'
with torch.no_grad():
    feats = model.extract_feat(torch.randn(1, 3, 64, 96))
assert [f.shape[-1] for f in feats][:4] == [24, 12, 6, 3], [f.shape for f in feats]
print('built', type(model).__name__)
"""


@pytest.mark.parametrize('scope,config,name', [
    ('mmdet', DET_CONFIG, 'MaskRCNN'),
    ('mmseg', SEG_CONFIG, 'EncoderDecoder'),
])
def test_config_with_custom_imports_builds(tmp_path, scope, config, name):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(config)
    script = tmp_path / 'build.py'
    script.write_text(BUILD.format(scope=scope))
    result = subprocess.run([sys.executable, str(script), str(cfg_file)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'built {name}' in result.stdout


def test_registered_in_both_registries_and_idempotent():
    import mmvit3
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    assert DET.get('ViT3') is mmvit3.ViT3 and SEG.get('ViT3') is mmvit3.ViT3
    assert mmvit3.register_models() == ['mmdet', 'mmseg']  # again: no error
    model = DET.build(dict(type='ViT3', arch='small', out_indices=(3,)))
    assert model.depths == [2, 6, 18, 8]
