"""bfloat16 on CPU as a user path (mmvit3.engine.amp): the backbone and neck
under autocast, the heads in float32; training through BF16AmpOptimWrapper
(tools/train.py --amp on a machine without a GPU), testing through
mmengine's test_cfg.fp16 (tools/test.py --amp, AmpHook), the inferencers'
path (tools/image_demo.py --amp)."""
import pytest
import torch
from _helpers import (DET_CFG, build, demo_cfg, demo_model, det_data_overrides, det_sample,
                      run_tool, short_run_overrides)

from mmvit3.engine import BF16AmpOptimWrapper, feature_autocast
from mmvit3.errors import ConfigError
from mmvit3.models import ViT3, PlainViT3


def _dtypes_of(module, kind=torch.nn.Linear):
    """Record the output dtype of every ``kind`` layer under ``module``."""
    seen = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
               for m in module.modules() if isinstance(m, kind)]
    return seen, handles


def test_feature_autocast_runs_backbone_and_neck_in_bf16_and_the_heads_in_float32():
    cfg = demo_cfg(DET_CFG)
    model = demo_model(cfg).eval()
    img, sample = det_sample(96, 128)
    data = model.data_preprocessor(dict(inputs=[img], data_samples=[sample]))
    backbone_dtypes, h1 = _dtypes_of(model.backbone)
    head_dtypes, h2 = _dtypes_of(model.roi_head)
    with torch.no_grad(), feature_autocast(model):
        feats = model.extract_feat(data['inputs'])
        results = model.predict(data['inputs'], data['data_samples'])
    for h in h1 + h2:
        h.remove()
    assert backbone_dtypes and set(backbone_dtypes) == {torch.bfloat16}
    assert head_dtypes and set(head_dtypes) == {torch.float32}
    assert all(f.dtype == torch.float32 for f in feats)
    assert results[0].pred_instances.bboxes.dtype == torch.float32
    # the class's forward again afterwards
    assert 'forward' not in vars(model.backbone) and 'forward' not in vars(model.neck)


def test_feature_autocast_gives_back_a_forward_installed_before_it():
    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(4, 4)
    installed = model.backbone.forward = lambda x: x  # as CompileHook installs one
    with feature_autocast(model):
        assert model.backbone.forward is not installed
    assert model.backbone.forward is installed


@pytest.mark.parametrize('cls, arch', [(ViT3, 'tiny'), (PlainViT3, 'tiny')])
def test_bf16_backbone_outputs_stay_within_tolerance_of_float32(cls, arch):
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.backbone = cls(arch=arch).eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        ref = model.backbone(x)
        with feature_autocast(model):
            low = model.backbone(x)
    for a, b in zip(low, ref):
        assert a.dtype == torch.float32
        rel = float((a - b).norm() / b.norm())
        assert 0 < rel < 2e-2, rel  # bf16 keeps 8 bits of mantissa: ~0.4% per op


def test_bf16_optim_wrapper_refuses_float16_and_unknown_dtypes():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    for dtype in ('float16', 'int8'):
        with pytest.raises(ConfigError, match='dtype'):
            BF16AmpOptimWrapper(optimizer=opt, dtype=dtype)


def test_bf16_optim_wrapper_builds_from_mmdet_and_mmseg_registries():
    from mmdet.registry import OPTIM_WRAPPERS as DET
    from mmseg.registry import OPTIM_WRAPPERS as SEG
    model = torch.nn.Linear(2, 2)
    for registry in (DET, SEG):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        wrapper = registry.build(dict(type='BF16AmpOptimWrapper', optimizer=opt))
        assert isinstance(wrapper, BF16AmpOptimWrapper)


def test_train_amp_on_cpu_trains_in_bf16_and_test_amp_evaluates(demo_root, tmp_path):
    work = tmp_path / 'work'
    rc, out = run_tool('tools/train.py', DET_CFG, '--amp', '--work-dir', work,
                       '--cfg-options', *short_run_overrides(),
                       *det_data_overrides(demo_root))
    assert rc == 0, out[-4000:]
    assert "'BF16AmpOptimWrapper'" in (work / 'mask_rcnn_vit3_demo.py').read_text()
    assert 'loss:' in out and 'nan' not in out.split('Iter(train)')[-1].lower()
    ckpt = (work / 'last_checkpoint').read_text().strip()
    rc, out = run_tool('tools/test.py', DET_CFG, ckpt, '--amp', '--work-dir', work,
                       '--cfg-options', *det_data_overrides(demo_root))
    assert rc == 0, out[-4000:]
    assert 'fp16=True on CPU: backbone and neck under bfloat16 autocast' in out
    assert 'coco/bbox_mAP' in out


def test_image_demo_amp_draws_its_picture_with_bf16_features(demo_root, tmp_path):
    cfg = demo_cfg(DET_CFG)
    model = demo_model(cfg)
    ckpt = tmp_path / 'w.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    image = demo_root / 'images' / 'val' / 'val_00000.jpg'
    rc, out = run_tool('tools/image_demo.py', image, DET_CFG, ckpt, '--amp',
                       '--out-dir', tmp_path / 'out')
    assert rc == 0, out[-4000:]
    assert '--amp: backbone and neck under bfloat16 autocast' in out
    assert (tmp_path / 'out' / 'vis' / 'val_00000.jpg').is_file()


def test_bf16_on_a_cpu_without_bf16_instructions_warns_once(monkeypatch, log_lines):
    from mmvit3.engine import amp
    monkeypatch.setattr(amp, 'cpu_isa', lambda: ['avx2'])
    amp.warn_if_bf16_is_emulated.cache_clear()
    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(4, 4)
    try:
        with feature_autocast(model):
            model.backbone(torch.randn(2, 4))
            model.backbone(torch.randn(2, 4))
        warned = [line for line in log_lines if 'without bfloat16 matrix instructions' in line]
        assert len(warned) == 1 and 'avx2' in warned[0]
        monkeypatch.setattr(amp, 'cpu_isa', lambda: ['avx2', 'avx512', 'avx512_bf16'])
        amp.warn_if_bf16_is_emulated.cache_clear()
        assert amp.warn_if_bf16_is_emulated() is False
    finally:
        amp.warn_if_bf16_is_emulated.cache_clear()
