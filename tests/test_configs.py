"""The released recipes (docs/model.md, "Training recipes") in configs/, and
their params / FLOPs (the paper's, README "Results") through
tools/get_flops.py's counting (mmvit3.analysis).

Everything runs on CPU without datasets or pretrained files. The FLOPs are
counted for each of the six models (10-40 s each on 2 CPU cores); a 3x
recipe's model is its 1x recipe's (checked apart), so its figures are.
"""
import copy
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import page_command, run_tool
from mmengine.config import Config

import mmvit3  # noqa: F401  (registers ViT3)
from mmvit3 import ViT3
from mmvit3.analysis import (analyze_config, analyze_model, build_model, config_scope,
                             make_flop_analyzer)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'

WIDTHS = {'t': [64, 128, 320, 512], 's': [64, 128, 320, 512],
          'b': [96, 192, 448, 640]}
ARCH = {'t': 'tiny', 's': 'small', 'b': 'base'}
DET_DROP_PATH = {('t', '1x'): 0.1, ('s', '1x'): 0.1, ('b', '1x'): 0.1,
                 ('t', '3x'): 0.3, ('s', '3x'): 0.4, ('b', '3x'): 0.6}
SEG_DROP_PATH = {'t': 0.2, 's': 0.4, 'b': 0.5}

# The paper's (params, FLOPs) as printed; 1x and 3x share them.
SPEC_FIGURES = {
    'mask_rcnn_vit3_t_coco': (48.4e6, 271e9),
    'mask_rcnn_vit3_s_coco': (74.0e6, 349e9),
    'mask_rcnn_vit3_b_coco': (114e6, 510e9),
    'mask_rcnn_vit3_t_coco_3x': (48.4e6, 271e9),
    'mask_rcnn_vit3_s_coco_3x': (74.0e6, 349e9),
    'mask_rcnn_vit3_b_coco_3x': (114e6, 510e9),
    'upernet_vit3_t_ade20k': (57.9e6, 946e9),
    'upernet_vit3_s_ade20k': (83.6e6, 1026e9),
    'upernet_vit3_b_ade20k': (124e6, 1195e9),
}
DET_CONFIGS = [f'mask_rcnn_vit3_{v}_coco{s}' for s in ('', '_3x')
               for v in 'tsb']
SEG_CONFIGS = [f'upernet_vit3_{v}_ade20k' for v in 'tsb']
ALL_CONFIGS = DET_CONFIGS + SEG_CONFIGS
# the 3x recipes' models are the 1x ones (test_detection_3x_differs_from_1x_only_in_schedule)
FLOPS_CONFIGS = [name for name in ALL_CONFIGS if not name.endswith('_3x')]
MS_SHORT_SIDES = list(range(480, 801, 32))


def load(name):
    return Config.fromfile(str(CONFIGS / f'{name}.py'))


@lru_cache(maxsize=None)
def built(name):
    """The config's model, built once per session; copy it before changing
    it."""
    return build_model(load(name))  # no init_weights: no pretrained file


def variant(name):
    return name.split('_vit3_')[1][0]


def close_to_printed(value, printed, rel):
    """Within ``rel`` of the printed figure, or rounding to it (a figure
    printed with 3 significant digits, e.g. 124M, is only known to +-0.5M)."""
    digits = 3 if printed < 1e12 else 4
    exponent = int(np.floor(np.log10(printed))) - (digits - 1)
    half_unit = 0.5 * 10.0**exponent
    return abs(value - printed) <= max(rel * printed, half_unit)


# ---------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_common_fields(name):
    cfg = load(name)
    assert cfg.custom_imports == dict(imports=['mmvit3'],
                                      allow_failed_imports=False)
    backbone = cfg.model.backbone
    v = variant(name)
    assert backbone.type == 'ViT3' and backbone.arch == ARCH[v]
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=cfg.pretrained)
    assert cfg.pretrained.startswith('https://')  # the authors' link (test_metafile.py)
    # AdamW, betas (0.9, 0.999), no decay on every '...norm...' parameter
    optim = cfg.optim_wrapper.optimizer
    assert optim.type == 'AdamW' and tuple(optim.betas) == (0.9, 0.999)
    assert set(optim) <= {'type', 'lr', 'betas', 'weight_decay'}
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['norm'] == dict(
        decay_mult=0.)
    assert 'clip_grad' not in cfg.optim_wrapper or \
        cfg.optim_wrapper.clip_grad is None


@pytest.mark.parametrize('name', DET_CONFIGS)
def test_detection_recipe(name):
    cfg = load(name)
    v, sched = variant(name), ('3x' if name.endswith('_3x') else '1x')
    assert config_scope(cfg) == 'mmdet'
    assert cfg.model.type == 'MaskRCNN'
    backbone = cfg.model.backbone
    assert backbone.drop_path_rate == DET_DROP_PATH[(v, sched)]
    assert backbone.with_cp is True
    assert cfg.model.neck.in_channels == WIDTHS[v]
    assert cfg.model.neck.type == 'FPN'
    assert cfg.model.roi_head.bbox_head.num_classes == 80
    # optimiser, AMP
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.optimizer.lr == 2e-4
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    # schedule
    epochs, milestones = (12, [8, 11]) if sched == '1x' else (36, [27, 33])
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop'
    assert cfg.train_cfg.max_epochs == epochs
    warmup, steps = cfg.param_scheduler
    assert warmup == dict(type='LinearLR', start_factor=0.001, by_epoch=False,
                          begin=0, end=1000)
    assert steps == dict(type='MultiStepLR', begin=0, end=epochs,
                         by_epoch=True, milestones=milestones, gamma=0.1)
    # data
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.val_dataloader.batch_size == 2
    assert cfg.test_dataloader.batch_size == 2
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t['type'] for t in pipeline] == [
        'LoadImageFromFile', 'LoadAnnotations', 'RandomFlip', 'RandomChoice',
        'PackDetInputs']
    assert pipeline[2].prob == 0.5
    plain, cropped = pipeline[3].transforms
    assert [t['type'] for t in plain] == ['RandomChoiceResize']
    assert [t['type'] for t in cropped] == [
        'RandomChoiceResize', 'RandomCrop', 'RandomChoiceResize']
    for resize in (plain[0], cropped[2]):
        assert [tuple(s) for s in resize.scales] == [(s, 1333)
                                                    for s in MS_SHORT_SIDES]
        assert resize.keep_ratio
    assert [tuple(s) for s in cropped[0].scales] == [(400, 1333), (500, 1333),
                                                    (600, 1333)]
    assert cropped[1] == dict(type='RandomCrop', crop_type='absolute_range',
                              crop_size=(384, 600), allow_negative_crop=True)
    test_pipeline = cfg.test_dataloader.dataset.pipeline
    assert dict(type='Resize', scale=(1333, 800),
                keep_ratio=True) in test_pipeline
    assert cfg.val_evaluator.type == 'CocoMetric'
    assert cfg.val_evaluator.metric == ['bbox', 'segm']


@pytest.mark.parametrize('v', 'tsb')
def test_detection_3x_differs_from_1x_only_in_schedule(v):
    one, three = (load(f'mask_rcnn_vit3_{v}_coco{s}').to_dict()
                  for s in ('', '_3x'))
    for cfg in (one, three):
        cfg['model']['backbone'].pop('drop_path_rate')
        for key in ('train_cfg', 'param_scheduler', 'max_epochs'):
            cfg.pop(key)
    assert one == three


@pytest.mark.parametrize('name', SEG_CONFIGS)
def test_segmentation_recipe(name):
    cfg = load(name)
    v = variant(name)
    assert config_scope(cfg) == 'mmseg'
    model = cfg.model
    assert model.type == 'EncoderDecoder'
    assert model.backbone.drop_path_rate == SEG_DROP_PATH[v]
    assert not model.backbone.with_cp
    assert model.decode_head.type == 'UPerHead'
    assert model.decode_head.in_channels == WIDTHS[v]
    assert model.decode_head.in_index == [0, 1, 2, 3]
    assert model.auxiliary_head.type == 'FCNHead'
    assert model.auxiliary_head.in_index == 2
    assert model.auxiliary_head.in_channels == WIDTHS[v][2]
    assert model.decode_head.num_classes == 150
    assert model.auxiliary_head.num_classes == 150
    assert model.test_cfg == dict(mode='whole')
    assert model.data_preprocessor.size == (512, 512)
    # optimiser: AMP for T only
    assert cfg.optim_wrapper.type == ('AmpOptimWrapper' if v == 't' else
                                      'OptimWrapper')
    assert cfg.optim_wrapper.optimizer.lr == 6e-5
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.01
    # schedule
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == 160000
    warmup, poly = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.start_factor == 1e-6
    assert (warmup.begin, warmup.end, warmup.by_epoch) == (0, 1500, False)
    assert poly.type == 'PolyLR' and (poly.power, poly.eta_min) == (1.0, 0.0)
    assert (poly.begin, poly.end, poly.by_epoch) == (1500, 160000, False)
    # data
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.val_dataloader.batch_size == 1
    assert cfg.train_dataloader.dataset.data_root == \
        'data/ade/ADEChallengeData2016'
    pipeline = {t['type']: t for t in cfg.train_dataloader.dataset.pipeline}
    assert pipeline['RandomResize'].scale == (2048, 512)
    assert pipeline['RandomResize'].ratio_range == (0.5, 2.0)
    assert pipeline['RandomCrop'].crop_size == (512, 512)
    assert pipeline['RandomCrop'].cat_max_ratio == 0.75
    assert pipeline['RandomFlip'].prob == 0.5 and 'PhotoMetricDistortion' in \
        pipeline
    test = {t['type']: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['Resize'].scale == (2048, 512) and test['Resize'].keep_ratio
    assert cfg.val_evaluator.type == 'IoUMetric'
    assert cfg.val_evaluator.iou_metrics == ['mIoU']


def test_multiscale_train_pipeline_runs():
    """The RandomChoice pipeline builds and always yields a short side of
    480..800 (step 32), through either branch."""
    from mmcv.transforms import Compose
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = load('mask_rcnn_vit3_t_coco')
    pipeline = Compose(cfg.train_pipeline[2:-1])  # no file loading / packing
    rng = np.random.default_rng(0)
    np.random.seed(0)
    for trial in range(12):
        h, w = (427, 640) if trial % 2 else (640, 480)
        masks = np.zeros((2, h, w), np.uint8)
        masks[0, 10:200, 20:300] = 1
        masks[1, 150:400, 100:450] = 1
        results = dict(
            img=rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
            img_shape=(h, w), ori_shape=(h, w),
            gt_bboxes=HorizontalBoxes(
                torch.tensor([[20., 10., 300., 200.], [100., 150., 450., 400.]])),
            gt_bboxes_labels=np.array([1, 2]),
            gt_ignore_flags=np.array([False, False]),
            gt_masks=BitmapMasks(masks, h, w))
        out = pipeline(results)
        assert min(out['img'].shape[:2]) in MS_SHORT_SIDES
        assert max(out['img'].shape[:2]) <= 1333


def test_optimizer_decay_groups():
    """No weight decay on exactly the backbone's LayerNorm / BN parameters;
    decay on everything else (linears, W1/W2/W3, convs, head BN)."""
    from mmengine.optim import build_optim_wrapper
    for name in ('mask_rcnn_vit3_t_coco', 'upernet_vit3_t_ade20k'):
        cfg = load(name)
        model = built(name)
        optim_cfg = cfg.optim_wrapper.copy()
        optim_cfg.type = 'OptimWrapper'  # AmpOptimWrapper needs a GPU
        wrapper = build_optim_wrapper(model, optim_cfg)
        decay = {}
        for group in wrapper.optimizer.param_groups:
            for p in group['params']:
                decay[id(p)] = group['weight_decay']
        base = cfg.optim_wrapper.optimizer.weight_decay
        norm_types = (torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm)
        seen_zero = 0
        for mod_name, module in model.named_modules():
            for p_name, p in module.named_parameters(recurse=False):
                full = f'{mod_name}.{p_name}'
                no_decay = (mod_name.startswith('backbone.')
                            and isinstance(module, norm_types))
                assert decay[id(p)] == (0. if no_decay else base), full
                seen_zero += no_decay
        assert seen_zero > 0


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_model_builds(name):
    cfg = load(name)
    model = built(name)
    v = variant(name)
    backbone = model.backbone
    assert isinstance(backbone, ViT3)
    assert backbone.embed_dims == WIDTHS[v]
    assert backbone.with_cp == (config_scope(cfg) == 'mmdet')
    last_block = backbone.layers[-1].blocks[-1]
    assert last_block.drop_path.drop_prob == pytest.approx(
        cfg.model.backbone.drop_path_rate)
    if config_scope(cfg) == 'mmdet':
        assert [c.conv.in_channels for c in model.neck.lateral_convs] == \
            WIDTHS[v]
    else:
        assert model.decode_head.in_channels == WIDTHS[v]
        assert model.auxiliary_head.in_channels == WIDTHS[v][2]
        assert model.decode_head.num_classes == 150


def analysis_doc() -> str:
    import mmvit3.analysis
    return mmvit3.analysis.__doc__


@pytest.mark.parametrize('name', FLOPS_CONFIGS)
def test_params_and_flops_match_spec(name):
    # analyze_model drops the auxiliary head: measure a copy
    res = analyze_model(copy.deepcopy(built(name)), config_scope(load(name)))
    params, flops = SPEC_FIGURES[name]
    assert close_to_printed(res.params, params, 0.003), res.params
    # what mmvit3/analysis.py promises: the released figures within 0.5 %
    promised = float(re.search(r'reproduced within ([\d.]+) %', analysis_doc())[1]) / 100
    assert abs(res.flops - flops) <= promised * flops, res.flops
    # the README's `tools/get_flops.py` column is what the tool prints
    readme = (ROOT / 'README.md').read_text()
    row = next(line for line in readme.splitlines() if line.startswith(f'| [`{name}.py`]'))
    assert f'| {res.params / 1e6:.2f}M, {res.flops / 1e9:.1f}G |' in row, row


@pytest.mark.parametrize('v', 'tsb')
def test_3x_rows_give_their_1x_models_figures(v):
    """The README's params / FLOPs cell of a 3x recipe is its 1x recipe's
    (the same model, counted by test_params_and_flops_match_spec), as are
    the paper's figures."""
    one, three = f'mask_rcnn_vit3_{v}_coco', f'mask_rcnn_vit3_{v}_coco_3x'
    assert SPEC_FIGURES[one] == SPEC_FIGURES[three]
    readme = (ROOT / 'README.md').read_text()
    rows = [next(line for line in readme.splitlines() if line.startswith(f'| [`{n}.py`]'))
            .split('|') for n in (one, three)]
    # the paper's params and FLOPs, and tools/get_flops.py's cell
    cells = [[row[3], row[4], row[6]] for row in rows]
    assert re.fullmatch(r' [\d.]+M, [\d.]+G ', cells[0][2]) and cells[0] == cells[1], cells


@pytest.mark.parametrize('part', ['mixer', 'mlp'])
def test_flop_count_of_the_mixer_and_mlp(part):
    """What mmengine's analyzer counts of a mixer and an MLP: the linear
    layers, the six inner matrix products and the queries' per-sample
    depth-wise convolution; the MLP's fc1, depth-wise convolution and fc2."""
    from mmvit3.models.ttt import TTTMixer
    from mmvit3.models.layers import ConvFFN
    hw = (6, 10)

    class Part(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.m = TTTMixer(96) if part == 'mixer' else ConvFFN(96, 384)

        def forward(self, x):
            return self.m(x, hw)

    b, n, c, d = 2, hw[0] * hw[1], 96, 32
    with torch.no_grad():
        total = make_flop_analyzer(Part().eval(), (torch.randn(b, n, c), )).total()
    if part == 'mixer':  # qkv + proj linears, 6 inner matmuls, q2 conv
        expected = b * n * (c * (3 * c + 3 * d) + (c + d) * c + 6 * c * d + 9 * d)
    else:  # fc1, dwc, fc2
        expected = b * n * (c * 4 * c + 9 * 4 * c + 4 * c * c)
    assert total == expected


def test_get_flops_tool_runs():
    """The README's tools/get_flops.py command (at a small shape) prints, for
    each config, what mmvit3.analysis counts with the same shape."""
    args = page_command(r'python tools/get_flops\.py ')
    configs = [a for a in args[1:] if a.endswith('.py')]
    assert len(configs) >= 2
    rc, out = run_tool(*args, '--shape', 64, 96)
    assert rc == 0, out[-3000:]
    for config in configs:
        want = analyze_config(str(ROOT / config), (64, 96))
        row = next(line for line in out.splitlines()
                   if line.startswith(os.path.basename(config)))
        cells = [c.strip() for c in row.split('|')]
        assert cells[1:3] == ['64x96', f'{want.params / 1e6:.2f}M'], row
        # a detector's count follows its proposals, which at this size vary
        # with the random weights: exact for the segmentor only
        if 'rcnn' not in config:
            assert cells[3] == f'{want.flops / 1e9:.1f}G', row
