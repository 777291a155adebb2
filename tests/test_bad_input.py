"""Bad input, as a user meets it: an image smaller than the network's stride
through the whole demo detector and segmentor; grayscale and RGBA files
through the demo configs' pipelines; truncated, garbage, empty and missing
image files in a tiny demo data set (an error naming the file, or skipped
with a warning on request); a misspelt type in a config; mixed precision
asked for on a machine without a GPU.

Covered elsewhere: a missing data root or annotation file
(test_demo_pipeline.py), a checkpoint for another arch and an unknown arch
(test_checkpoint.py, test_vit3.py; here only through a config).
"""
import copy
import functools
import json

import cv2
import numpy as np
import pytest
import torch
from _helpers import (DET_CFG, ROOT, SEG_CFG, build, demo_cfg, demo_model,
                      det_sample, finite_log_vars, loader_overrides,
                      make_demo_data, run_tool, seg_sample, det_data_overrides)
from mmcv.transforms import LoadImageFromFile
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper

import mmvit3  # noqa: F401  (registers ViT3 and the checked loader)
from mmvit3.cli.common import check_amp
from mmvit3.config import explain_unknown_types, typed_dicts, unknown_type_message
from mmvit3.datasets import (LoadImageFromFileChecked, image_bytes_problem,
                             use_checked_image_loading)
from mmvit3.errors import AmpUnavailableError, BadImageError, UnknownTypeError

TINY = (20, 28)  # smaller than the backbone's stride of 32


# --------------------------------------------------------------------------
# an image smaller than the stride, through the whole model


@pytest.mark.parametrize('config,pad', [
    (DET_CFG, None), (DET_CFG, 1), (SEG_CFG, None), (SEG_CFG, 1)])
def test_tiny_image_trains_and_tests(config, pad):
    """20x28 images: as the demo config pads them (to 32x32), and unpadded
    (pad=1: the backbone's stages see 5x7 ... 1x1). A training step on two
    of them, a test step on one."""
    det = config == DET_CFG
    merge = {}
    if pad is not None:
        key = 'pad_size_divisor' if det else 'size_divisor'
        merge[f'model.data_preprocessor.{key}'] = pad
    cfg = demo_cfg(config, **merge)
    model = demo_model(cfg)
    # the segmentation demo's labels: background and shapes, none ignored
    make = det_sample if det else functools.partial(seg_sample, ignored=False)
    samples = [make(*TINY, seed=s) for s in (0, 1)]
    backbone_sizes = []
    model.backbone.register_forward_hook(
        lambda m, i, o: backbone_sizes.append(tuple(i[0].shape[-2:])))

    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))
    data = dict(inputs=[s[0] for s in samples],
                data_samples=[s[1] for s in samples])
    finite_log_vars(model.train_step(data, optim))
    assert backbone_sizes[-1] == (TINY if pad == 1 else (32, 32))
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name

    model.eval()
    with torch.no_grad():
        result, = model.test_step(
            dict(inputs=[samples[0][0]], data_samples=[samples[0][1]]))
    if det:
        pred = result.pred_instances
        assert pred.masks.shape[1:] == TINY
        boxes = pred.bboxes
        assert torch.isfinite(boxes).all()
        assert (boxes[:, 2] <= TINY[1] + 1e-3).all() and \
            (boxes[:, 3] <= TINY[0] + 1e-3).all()
    else:
        assert tuple(result.pred_sem_seg.data.shape) == (1, *TINY)
        assert torch.isfinite(result.seg_logits.data).all()


# --------------------------------------------------------------------------
# grayscale and RGBA files through the configs' pipelines


def _gray_and_rgba(img_path):
    """(gray, bgra) versions of a demo image."""
    bgr = cv2.imread(str(img_path))
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    alpha = np.random.default_rng(0).integers(0, 256, bgr.shape[:2], np.uint8)
    return gray, np.dstack([bgr, alpha])


def test_grayscale_and_rgba_files_train_detector(tmp_path):
    root = tmp_path / 'demo'
    make_demo_data.make_demo_data(str(root), num_train=2, num_val=1, size=64)
    train = root / 'images' / 'train'
    gray, bgra = _gray_and_rgba(train / 'train_00001.jpg')
    cv2.imwrite(str(train / 'train_00000.jpg'), gray)  # 1-channel JPEG
    cv2.imwrite(str(train / 'train_00001.png'), bgra)  # 4-channel PNG
    ann_file = root / 'annotations' / 'instances_train.json'
    coco = json.loads(ann_file.read_text())
    coco['images'][1]['file_name'] = 'train_00001.png'
    ann_file.write_text(json.dumps(coco))
    assert cv2.imread(str(train / 'train_00001.png'),
                      cv2.IMREAD_UNCHANGED).shape[2] == 4

    cfg = demo_cfg(DET_CFG, **{
        'train_dataloader.dataset.data_root': f'{root}/',
        'train_dataloader.dataset.pipeline.2.scale': (64, 64),
        'train_dataloader.dataset.pipeline.3.prob': 0.,
    })
    use_checked_image_loading(cfg)  # as the tools do
    dataset = build(cfg, 'DATASETS', cfg.train_dataloader.dataset)
    items = [dataset[i] for i in range(len(dataset))]
    assert [i['data_samples'].img_path.rsplit('/', 1)[1] for i in items] == \
        ['train_00000.jpg', 'train_00001.png']
    for item in items:
        assert item['inputs'].shape == (3, 64, 64)
    g = items[0]['inputs']
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])  # gray -> BGR

    model = demo_model(cfg).train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))
    finite_log_vars(model.train_step(pseudo_collate(items), optim))


def test_grayscale_and_rgba_files_train_segmentor(tmp_path):
    root = tmp_path / 'demo'
    make_demo_data.make_demo_data(str(root), num_train=2, num_val=1, size=64)
    ade = root / 'ade'
    images = ade / 'images' / 'png'
    images.mkdir()
    gray, bgra = _gray_and_rgba(ade / 'images' / 'training' / 'train_00001.jpg')
    cv2.imwrite(str(images / 'train_00000.png'), gray)
    cv2.imwrite(str(images / 'train_00001.png'), bgra)

    cfg = demo_cfg(SEG_CFG, **{
        'train_dataloader.dataset.data_root': f'{ade}/',
        'train_dataloader.dataset.img_suffix': '.png',
        'train_dataloader.dataset.data_prefix.img_path': 'images/png',
    })
    use_checked_image_loading(cfg)
    dataset = build(cfg, 'DATASETS', cfg.train_dataloader.dataset)
    items = [dataset[i] for i in range(len(dataset))]
    assert len(items) == 2
    for item in items:
        assert item['inputs'].shape == (3, 64, 64)
    g = items[0]['inputs']
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])

    model = demo_model(cfg).train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))
    finite_log_vars(model.train_step(pseudo_collate(items), optim))


# --------------------------------------------------------------------------
# truncated, garbage, empty and missing image files


def _jpeg(img, **params):
    flags = [cv2.IMWRITE_JPEG_QUALITY, 90]
    for k, v in params.items():
        flags += [getattr(cv2, f'IMWRITE_JPEG_{k.upper()}'), v]
    ok, buf = cv2.imencode('.jpg', img, flags)
    assert ok
    return buf.tobytes()


def _with_thumbnail(jpeg: bytes, thumb: bytes) -> bytes:
    """An APP1 (EXIF) segment holding a complete small JPEG, as cameras
    write: its end-of-image marker must not hide a truncated main image."""
    payload = b'Exif\x00\x00' + thumb
    return (jpeg[:2] + b'\xff\xe1' + (len(payload) + 2).to_bytes(2, 'big') +
            payload + jpeg[2:])


@pytest.fixture(scope='module')
def demo_image():
    img, _, _ = make_demo_data.make_sample(0, 'train', 0, 64)
    return img


def test_image_bytes_problem(demo_image):
    jpeg = _jpeg(demo_image)
    progressive = _jpeg(demo_image, progressive=1)
    png = cv2.imencode('.png', demo_image)[1].tobytes()
    thumb = _jpeg(demo_image[::4, ::4])
    for good in (jpeg, progressive, png, _with_thumbnail(jpeg, thumb),
                 jpeg + b'\x00' * 64 + b'trailing data after the image'):
        assert image_bytes_problem(good) is None
    for cut in (0.3, 0.7, 0.99):
        for data in (jpeg, progressive, _with_thumbnail(jpeg, thumb)):
            problem = image_bytes_problem(data[:int(len(data) * cut)])
            assert 'truncated JPEG' in problem, cut
        assert 'truncated PNG' in image_bytes_problem(png[:int(len(png) * cut)])
    assert 'truncated JPEG' in image_bytes_problem(jpeg[:40])  # in the header
    assert 'empty' in image_bytes_problem(b'')
    assert image_bytes_problem(b'GIF89a...') is None  # left to the decoder


def test_loader_names_bad_files_or_skips_them(tmp_path, demo_image, log_lines,
                                              monkeypatch):
    jpeg = _jpeg(demo_image)
    files = {
        'truncated.jpg': (jpeg[:len(jpeg) * 2 // 3], 'truncated JPEG'),
        'garbage.jpg': (b'<html>404 Not Found</html>' * 10, 'not an image'),
        'empty.jpg': (b'', 'empty file'),
        'missing.jpg': (None, 'cannot be read'),
    }
    for name, (data, _) in files.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    # Whether a decoder notices a cut-short JPEG depends on it: OpenCV 4
    # (and Pillow with ImageFile.LOAD_TRUNCATED_IMAGES, which some code sets)
    # decode it without an error, the missing rows grey; OpenCV 5 refuses.
    # The checked loader recognises it from the file's structure, whatever
    # the decoder.
    monkeypatch.setattr('PIL.ImageFile.LOAD_TRUNCATED_IMAGES', True)
    truncated = dict(img_path=str(tmp_path / 'truncated.jpg'))
    stock = LoadImageFromFile(imdecode_backend='pillow')(dict(truncated))
    assert stock['img'].shape == demo_image.shape
    with pytest.raises(BadImageError, match='truncated JPEG'):
        LoadImageFromFileChecked(imdecode_backend='pillow')(dict(truncated))

    strict = LoadImageFromFileChecked()
    skipping = LoadImageFromFileChecked(skip_bad_images=True)
    for name, (_, problem) in files.items():
        path = str(tmp_path / name)
        with pytest.raises(BadImageError) as info:
            strict(dict(img_path=path))
        assert path in str(info.value) and problem in str(info.value)
        assert 'skip_bad_images' in str(info.value)
        assert info.value.path == path
        assert skipping(dict(img_path=path)) is None
        assert skipping(dict(img_path=path)) is None
        warned = [line for line in log_lines if path in line]
        assert len(warned) == 1 and 'Skipped bad image file' in warned[0]
    good = tmp_path / 'good.jpg'
    good.write_bytes(jpeg)
    out = strict(dict(img_path=str(good)))
    assert out['img'].shape == demo_image.shape
    assert out['img_shape'] == out['ori_shape'] == demo_image.shape[:2]
    assert 'skip_bad_images=False' in repr(strict)


def _break_images(root, *names):
    """Truncate the first image named, overwrite the second with garbage."""
    truncated, garbage = names
    data = truncated.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    garbage.write_bytes(b'\x00garbage' * 50)


def test_dataset_with_bad_files(tmp_path, log_lines):
    root = tmp_path / 'demo'
    make_demo_data.make_demo_data(str(root), num_train=3, num_val=1, size=64)
    train = root / 'images' / 'train'
    _break_images(root, train / 'train_00000.jpg', train / 'train_00001.jpg')
    cfg = demo_cfg(DET_CFG, **{
        'train_dataloader.dataset.data_root': f'{root}/',
        'train_dataloader.dataset.pipeline.2.scale': (64, 64),
    })
    pristine = copy.deepcopy(cfg)

    assert use_checked_image_loading(cfg) == 3  # train, val, test
    dataset = build(cfg, 'DATASETS', cfg.train_dataloader.dataset)
    for i, problem in ((0, 'truncated JPEG'), (1, 'not an image')):
        with pytest.raises(BadImageError, match=problem) as info:
            dataset[i]
        assert str(train / f'train_0000{i}.jpg') in str(info.value)
    assert dataset[2]['data_samples'].img_path.endswith('train_00002.jpg')

    # opt-in: BaseDataset draws another sample, with a warning per bad file
    cfg = pristine
    cfg.skip_bad_images = True
    use_checked_image_loading(cfg)
    assert cfg.train_dataloader.dataset.pipeline[0].skip_bad_images is True
    assert cfg.val_dataloader.dataset.pipeline[0].skip_bad_images is False
    dataset = build(cfg, 'DATASETS', cfg.train_dataloader.dataset)
    for i in (0, 1, 0):
        assert dataset[i]['data_samples'].img_path.endswith('train_00002.jpg')
    warned = [line for line in log_lines if 'Skipped bad image file' in line]
    assert len(warned) == 2
    assert str(train / 'train_00000.jpg') in warned[0] + warned[1]
    assert str(train / 'train_00001.jpg') in warned[0] + warned[1]


@pytest.mark.parametrize('config', [
    'configs/mask_rcnn_vit3_t_coco.py', 'configs/upernet_vit3_t_ade20k.py'])
def test_paper_configs_get_the_checked_loader(config):
    cfg = Config.fromfile(str(ROOT / config))
    before = cfg.train_dataloader.dataset.pipeline[0].copy()
    count = use_checked_image_loading(cfg, skip_bad_images=True)
    assert count >= 3 + ('tta_pipeline' in cfg)
    loader = cfg.train_dataloader.dataset.pipeline[0]
    assert loader.type == 'LoadImageFromFileChecked' and loader.skip_bad_images
    assert {k: v for k, v in loader.items()
            if k not in ('type', 'skip_bad_images')} == \
        {k: v for k, v in before.items() if k != 'type'}
    for split in ('val', 'test'):
        first = cfg[f'{split}_dataloader'].dataset.pipeline[0]
        assert first.type == 'LoadImageFromFileChecked'
        assert first.skip_bad_images is False
    used = [cfg[f'{s}_dataloader'] for s in ('train', 'val', 'test')]
    assert "'LoadImageFromFile'" not in repr(used + [cfg.get('tta_pipeline')])
    from mmdet.registry import TRANSFORMS as DET
    from mmseg.registry import TRANSFORMS as SEG
    assert DET.get('LoadImageFromFileChecked') is LoadImageFromFileChecked
    assert SEG.get('LoadImageFromFileChecked') is LoadImageFromFileChecked


def test_train_tool_stops_at_a_bad_image_or_skips_it(tmp_path):
    root = tmp_path / 'demo'
    make_demo_data.make_demo_data(str(root), num_train=3, num_val=1, size=64)
    images = root / 'ade' / 'images' / 'training'
    _break_images(root, images / 'train_00000.jpg', images / 'train_00001.jpg')
    args = [
        'tools/train.py', SEG_CFG, '--work-dir', tmp_path / 'work',
        '--cfg-options', 'train_cfg.max_iters=1', 'val_cfg=None',
        'val_dataloader=None', 'val_evaluator=None',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.save_optimizer=False',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'train_dataloader.sampler.shuffle=False',
        f'train_dataloader.dataset.data_root={root}/ade/'
    ]
    rc, out = run_tool(*args)
    # the dataset check reads the headers: the garbage file stops the run
    # before anything is built (the truncated one, whose header is whole, the
    # checked loader names: test_dataset_with_bad_files)
    assert rc == 2, out[-3000:]
    assert f'unreadable image files: {images / "train_00001.jpg"}' in out, out[-3000:]
    assert 'skip_bad_images=True' in out and 'Traceback' not in out
    assert not (tmp_path / 'work' / 'iter_1.pth').exists()

    rc, out = run_tool(*args, 'skip_bad_images=True')
    assert rc == 0, out[-3000:]
    assert f'Skipped bad image file {images / "train_00000.jpg"}' in out
    assert f'Skipped bad image file {images / "train_00001.jpg"}' in out
    assert (tmp_path / 'work' / 'iter_1.pth').is_file()


# --------------------------------------------------------------------------
# config mistakes


def test_misspelt_type_names_registry_and_close_matches():
    cfg = demo_cfg(DET_CFG, **{'model.backbone.type': 'VIT3'})
    with pytest.raises(UnknownTypeError) as info:
        with explain_unknown_types(cfg):
            build(cfg)
    err = info.value
    msg = str(err)
    assert "Unknown type 'VIT3'" in msg and "'mmdet::model' registry" in msg
    assert 'model.backbone.type' in msg
    assert "Did you mean: 'ViT3'" in msg and err.suggestions[0] == 'ViT3'
    assert "custom_imports = dict(imports=['mmvit3']" in msg
    assert isinstance(err, KeyError) and err.scope == 'mmdet'

    # a config that does not import mmvit3 is told so
    cfg = {k: v for k, v in cfg.items() if k != 'custom_imports'}
    seg = demo_cfg(SEG_CFG)
    try:
        build(seg, 'TRANSFORMS', dict(type='LoadImageFromFlie'))
    except KeyError as e:
        raw = e
    msg = unknown_type_message(raw, cfg)
    assert "'mmseg::transform' registry" in msg
    assert "Did you mean: 'LoadImageFromFile'" in msg
    assert 'does not import mmvit3' in msg

    # other KeyErrors pass through unchanged
    with pytest.raises(KeyError) as info:
        with explain_unknown_types(cfg):
            {}['model']
    assert type(info.value) is KeyError
    assert unknown_type_message(KeyError('model'), cfg) is None


def test_unknown_arch_and_foreign_checkpoint_through_a_config(tmp_path):
    """The backbone's own checks reach a config user unchanged."""
    from mmvit3.errors import CheckpointMismatchError
    cfg = demo_cfg(DET_CFG, **{'model.backbone.arch': 'tiiny'})
    with pytest.raises(ValueError, match=r"Unknown ViT3 arch 'tiiny'.*'tiny'"):
        build(cfg)

    path = tmp_path / 'base.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               build(cfg, key=dict(type='ViT3', arch='base'))
                               .state_dict().items()}}, path)
    cfg = demo_cfg(DET_CFG, **{'model.backbone.init_cfg': dict(
        type='Pretrained', checkpoint=str(path))})
    model = build(cfg)
    with pytest.raises(CheckpointMismatchError,
                       match=r'ViT3 base, the model is a ViT3 tiny.*shape mismatches: .*file \(96'):
        model.init_weights()


def test_train_tool_explains_misspelt_backbone(tmp_path):
    root = tmp_path / 'demo'
    make_demo_data.make_demo_data(str(root), num_train=1, num_val=1, size=64)
    rc, out = run_tool(
        'tools/train.py', DET_CFG, '--work-dir', tmp_path / 'work',
        '--cfg-options', 'model.backbone.type=ViT33',
        *loader_overrides('dataset.', data_root=f'{root}/'),
        f'val_evaluator.ann_file={root}/annotations/instances_val.json')
    assert rc == 2, out[-3000:]  # a user's mistake: a message, no traceback
    assert "tools/train.py: Unknown type 'ViT33'" in out and 'Traceback' not in out, out[-3000:]
    assert "'mmdet::model' registry" in out and 'model.backbone.type' in out
    assert "Did you mean: 'ViT3'?" in out
    assert "custom_imports = dict(imports=['mmvit3']" in out


def test_amp_optim_wrapper_on_cpu_names_the_float32_and_bf16_overrides(tmp_path, capsys,
                                                                     monkeypatch):
    paper = Config.fromfile(str(ROOT / 'configs/mask_rcnn_vit3_t_coco.py'))
    with pytest.raises(AmpUnavailableError, match='optim_wrapper.type=OptimWrapper') as info:
        check_amp(paper, device='cpu')
    assert 'optim_wrapper.type=BF16AmpOptimWrapper' in str(info.value)
    check_amp(paper, device='cuda')
    check_amp(Config.fromfile(str(ROOT / DET_CFG)), device='cpu')

    if torch.cuda.is_available():
        pytest.skip('the tool check below needs a machine without a GPU')
    root = tmp_path / 'demo'
    make_demo_data.make_demo_data(str(root), num_train=1, num_val=1, size=64)
    monkeypatch.chdir(ROOT)
    from mmvit3.cli import train
    rc = train.main([
        DET_CFG, '--work-dir', str(tmp_path / 'work'),
        '--cfg-options', 'optim_wrapper.type=AmpOptimWrapper',
        *loader_overrides('dataset.', data_root=f'{root}/'),
        f'val_evaluator.ann_file={root}/annotations/instances_val.json'])
    err = capsys.readouterr().err
    assert rc == 2 and 'needs a GPU' in err and 'BF16AmpOptimWrapper' in err
    assert not (tmp_path / 'work').exists()


def test_typed_dicts_walks_configs_parents_first_and_allows_changes():
    """The walk the config fixes share (checked image loader, SyncBN on
    CPU, unknown-type messages): every dict with a 'type' under dicts and
    lists, with its dotted path, a parent before its children, and a
    yielded dict may be changed."""
    cfg = Config(dict(model=dict(type='A', backbone=dict(type='ViT3', norm_cfg=dict(type='SyncBN')),
                                 heads=[dict(type='H', loss=dict(type='L')), dict(x=1)]),
                      pipeline=[dict(type='LoadImageFromFile')], other=3))
    seen = []
    for path, node in typed_dicts(cfg):
        seen.append((path, node['type']))
        node['type'] = node['type'].lower()
        node['added'] = True  # changing the dict does not upset the walk
    assert seen == [('model', 'A'), ('model.backbone', 'ViT3'),
                    ('model.backbone.norm_cfg', 'SyncBN'), ('model.heads.0', 'H'),
                    ('model.heads.0.loss', 'L'), ('pipeline.0', 'LoadImageFromFile')]
    assert cfg.model.backbone.norm_cfg.type == 'syncbn' and cfg.pipeline[0].added
    assert list(typed_dicts(dict(type='T'))) == [('', {'type': 'T'})]
    assert list(typed_dicts([1, 'a', None])) == []


@pytest.mark.parametrize('option, says', [
    ('model.backbone.drop_path_rate=high', 'is a number in the config (0.0); give a number'),
    ('optim_wrapper.optimizer.lr=fast', 'is a number in the config (0.0004); give a number'),
    ('model.backbone.out_indices=[0,1', 'unbalanced brackets'),
    ('model..backbone.arch=tiny', "the key 'model..backbone.arch' has an empty part"),
    ("model.backbone={'a':1}", 'a dict value is not taken by --cfg-options'),
    ('model.backbone.arch.depths=[1,1]', "model.backbone.arch is 'tiny' in the config, not a dict"),
    ('=3', 'each override is KEY=VALUE'),
])
def test_a_bad_cfg_option_exits_2_naming_the_option_and_what_is_accepted(
        tmp_path, option, says):
    """Each was a raw traceback (exit 1) or a run with a value nobody typed."""
    rc, out = run_tool('tools/train.py', DET_CFG, '--work-dir', tmp_path / 'work',
                       '--cfg-options', option)
    assert rc == 2, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert says in last and option.split('=')[0] in last, last
    assert not (tmp_path / 'work').exists()  # refused before the run began


def test_a_config_with_a_syntax_error_is_named_with_its_line(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text(f"_base_ = '{ROOT / DET_CFG}'\nmodel = dict(backbone=dict(drop_path_rate=0.1)\n")
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = '{bad}'\n")
    rc, out = run_tool('tools/train.py', bad, '--work-dir', tmp_path / 'work')
    assert rc == 2 and 'Traceback' not in out, out[-3000:]
    assert f'{bad}, line 2: ' in out.strip().splitlines()[-1]
    rc, out = run_tool('tools/test.py', child, 'none.pth')
    assert rc == 2 and 'Traceback' not in out, out[-3000:]
    assert f'{child}: a config it inherits (_base_) has a syntax error' in out


def test_decay_multipliers_without_a_weight_decay_are_named(tmp_path, demo_root):
    """Was mmengine's 'base_wd should not be None' under a traceback."""
    rc, out = run_tool('tools/train.py', DET_CFG, '--work-dir', tmp_path / 'work',
                       '--cfg-options', *det_data_overrides(demo_root),
                       'optim_wrapper.optimizer.type=SGD',
                       'optim_wrapper.optimizer.weight_decay=None')
    assert rc == 2 and 'Traceback' not in out, out[-3000:]
    assert ('paramwise_cfg sets norm_decay_mult, but optim_wrapper.optimizer has no '
            'weight_decay') in out.strip().splitlines()[-1]


def test_a_transform_missing_an_argument_names_it_and_where(tmp_path, demo_root):
    """Was a TypeError traceback (exit 1) from inside the dataset's build."""
    rc, out = run_tool('tools/train.py', DET_CFG, '--work-dir', tmp_path / 'work',
                       '--cfg-options', *det_data_overrides(demo_root),
                       'train_dataloader.num_workers=0',
                       'train_dataloader.persistent_workers=False',
                       'train_dataloader.dataset.pipeline.2.type=RandomChoiceResize')
    assert rc == 2 and 'Traceback' not in out, out[-3000:]
    assert ("RandomChoiceResize (" in out and "needs 'scales', which the config does not "
            "give it at train_dataloader.dataset.pipeline.2" in out.strip().splitlines()[-1])


def test_a_data_root_with_spaces_keeps_them(tmp_path):
    """mmengine's --cfg-options parser removes every space of a value: the
    error then named a path the user never typed."""
    root = f'{tmp_path}/my data/'
    rc, out = run_tool('tools/train.py', DET_CFG, '--work-dir', tmp_path / 'work',
                       '--cfg-options', f'data_root={root}')
    assert rc == 2 and 'Traceback' not in out, out[-3000:]
    assert f'{root}   [train_dataloader.dataset.data_root]' in out, out[-3000:]
    assert f'{tmp_path}/mydata/' not in out
