"""Loading the authors' released files (docs/model.md): the classification
layout with its pickled yacs config (in their exact format, without yacs),
loaded safely; other objects refused; conversion; and the released
detection layout."""
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path
from unittest import mock

import pytest
import torch
from _helpers import (Explosive, TrainingNote, authors_config, authors_training_state,
                      page_command, rope_tables, run_tool, save_authors_file)

from mmvit3 import UnsafeCheckpointError, ViT3, load_checkpoint_file
from mmvit3.cli.convert_checkpoint import convert
from mmvit3.engine import check_model_checkpoint
from mmvit3.errors import CheckpointMismatchError, CheckpointModuleError, OutputError
from mmvit3.models import checkpoint_filter_fn, load_pretrained
from mmvit3.safe_load import trust_checkpoints

REPO = Path(__file__).resolve().parents[1]


def classification_layout(arch='tiny', seed=0, training_state=True):
    """A checkpoint as the authors' H-ViT3 ImageNet script saves it
    (vittt/utils_ema.py): the weights, their EMA, the run's yacs config and,
    unless ``training_state`` is off (as in a trimmed release), the optimizer
    and scheduler."""
    torch.manual_seed(seed)
    model = ViT3(arch=arch)
    for p in model.parameters():  # weights unlike a fresh init
        p.data.normal_(0, 0.05)
    sd = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith('norm')}
    sd.update(rope_tables(model))
    sd['norm.weight'] = torch.rand(model.embed_dims[-1])
    sd['norm.bias'] = torch.rand(model.embed_dims[-1])
    sd['norm.running_mean'] = torch.rand(model.embed_dims[-1])
    sd['norm.running_var'] = torch.rand(model.embed_dims[-1])
    sd['norm.num_batches_tracked'] = torch.tensor(7)
    sd['head.weight'] = torch.randn(1000, model.embed_dims[-1])
    sd['head.bias'] = torch.randn(1000)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    return {
        'model': sd,
        **(authors_training_state(sd) if training_state else {}),
        'max_accuracy': 84.0,
        'max_accuracy_e': 84.1,
        'epoch': 299,
        'config': authors_config(f'h_vittt_{arch}'),
        'state_dict_ema': ema,
    }


@pytest.fixture
def official_file(tmp_path):
    ckpt = classification_layout()
    return save_authors_file(ckpt, tmp_path / 'h_vittt_tiny.pth'), ckpt


def assert_loaded(model, weights):
    sd = model.state_dict()
    for k, v in weights.items():
        if k in sd:
            torch.testing.assert_close(sd[k], v, msg=k)


@pytest.mark.parametrize('training_state', [True, False], ids=['full', 'trimmed'])
def test_the_authors_file_loads_safely_without_yacs(training_state, tmp_path, log_lines):
    """Their pickled yacs config is allowed by its name: the default, safe
    load reads the file (yacs is not installed), with or without the
    optimizer and scheduler entries, and the backbone loads 'model',
    reporting what it dropped and left untouched."""
    ckpt = classification_layout(training_state=training_state)
    path = save_authors_file(ckpt, tmp_path / 'h_vittt_tiny.pth')
    assert 'yacs' not in sys.modules
    with pytest.raises(ModuleNotFoundError, match='yacs'):  # what a full unpickle needs
        torch.load(path, weights_only=False)
    model = ViT3(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    fresh_norm = model.norm2.weight.detach().clone()
    model.init_weights()
    assert_loaded(model, ckpt['model'])
    torch.testing.assert_close(model.norm2.weight, fresh_norm)  # left untouched
    text = '\n'.join(log_lines)
    for name in ['head.weight', 'norm.running_var', 'layers.2.blocks.8.attn.rope.rotations',
                 'norm0.weight', 'norm3.bias', "entry 'model'"]:
        assert name in text
    assert 'full unpickling' not in text and 'yacs' not in sys.modules


def test_the_authors_config_loads_as_plain_values(official_file):
    path, ckpt = official_file
    # beyond torch's own list, the file names the yacs class only
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == ['yacs.config.CfgNode']
    loaded = load_checkpoint_file(str(path))
    assert set(loaded) == set(ckpt)
    config = loaded['config']
    assert type(config) is OrderedDict and config == ckpt['config']
    assert config['TRAIN']['OPTIMIZER']['BETAS'] == (0.9, 0.999)
    assert config['AUG']['CUTMIX_MINMAX'] is None and config['BASE'] == ['']
    assert vars(config['MODEL']) == {'__immutable__': True, '__deprecated_keys__': set(),
                                     '__renamed_keys__': {}, '__new_allowed__': False}
    # a loaded file saved again (plain containers only) loads safely as well
    again = path.with_name('again.pth')
    torch.save(loaded, again)
    assert load_checkpoint_file(str(again))['config'] == config


def test_objects_beside_the_authors_config_are_still_refused(tmp_path):
    """Only the yacs config's name is allowed: any other object in the same
    file is refused, named, with the opt-in, and nothing of it runs."""
    marker = tmp_path / 'ran'
    ckpt = classification_layout('tiny')
    ckpt['note'] = TrainingNote('mine')
    noted = save_authors_file(ckpt, tmp_path / 'noted.pth')
    ckpt['note'] = Explosive(marker)
    hostile = save_authors_file(ckpt, tmp_path / 'hostile.pth')
    for path, named in ((noted, 'TrainingNote'), (hostile, 'system')):
        with pytest.raises(UnsafeCheckpointError) as err:
            ViT3(init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()
        msg = str(err.value)
        assert str(path) in msg and named in msg and 'CfgNode' not in msg
        assert 'trusted=True' in msg and 'Nothing from it was run' in msg
    assert not marker.exists()


class Gone:
    """An object of a module that is not installed when the file is loaded."""


def test_trusting_the_authors_file_needs_no_yacs_either(official_file, tmp_path):
    """With the opt-in on (say --trust-checkpoint for another file of the
    run), the authors' file still loads without yacs: the full unpickle
    misses the module, the safe load reads the file. A trusted file the safe
    load cannot read either names the missing module."""
    path, ckpt = official_file
    with trust_checkpoints():
        assert load_checkpoint_file(str(path))['config'] == ckpt['config']
    gone = tmp_path / 'gone.pth'
    Gone.__module__ = 'gone_module'
    with mock.patch.dict(sys.modules, {'gone_module': types.SimpleNamespace(Gone=Gone)}):
        torch.save({'model': {}, 'note': Gone()}, gone)
    with trust_checkpoints(), pytest.raises(CheckpointModuleError, match="'gone_module'"):
        load_checkpoint_file(str(gone))


def test_key_picks_ema_weights(official_file):
    path, ckpt = official_file
    model = ViT3()
    report = load_pretrained(model, str(path), key='state_dict_ema')
    assert report.source_key == 'state_dict_ema'
    assert_loaded(model, ckpt['state_dict_ema'])
    with pytest.raises(KeyError, match="no entry 'ema'.*'state_dict_ema'"):
        load_pretrained(model, str(path), key='ema')


def test_filter_report_names_what_it_dropped(official_file):
    _, ckpt = official_file
    weights, report = checkpoint_filter_fn(ckpt, ViT3())
    dropped = {name for names in report.dropped.values() for name in names}
    assert {'head.weight', 'head.bias', 'norm.weight', 'norm.num_batches_tracked'} <= dropped
    assert sum('rope.rotations' in n for n in dropped) == 17
    assert not any('rope' in k or k.startswith(('head.', 'norm.')) for k in weights)
    assert sorted(report.untouched) == sorted(
        f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))
    assert 'head.weight' in ckpt['model']  # the input is not changed


def test_convert_then_load_safely(official_file, tmp_path):
    """tools/convert_checkpoint.py, for offline use: the authors' file
    converts without the opt-in into a tensors-only file that loads into the
    same backbone as the original."""
    path, ckpt = official_file
    out = tmp_path / 'converted' / 'h_vit3_tiny.pth'
    # the page's command
    rc, text = run_tool(*page_command(r'python tools/convert_checkpoint\.py ',
                                      {r'[^/]+\.pth': path, r'\S+/\S+\.pth': out}))
    assert rc == 0, text[-3000:]
    assert 'ViT3 tiny' in text and 'head.weight' in text
    plain = torch.load(out, weights_only=True)  # tensors only
    assert plain['meta']['arch'] == 'tiny'

    converted = ViT3(init_cfg=dict(type='Pretrained', checkpoint=str(out)))
    converted.init_weights()
    original = ViT3(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    original.init_weights()
    x = torch.randn(1, 3, 61, 45)
    with torch.no_grad():
        for a, b in zip(converted.eval()(x), original.eval()(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(OutputError, match='--overwrite'):
        convert(str(path), str(out))


def test_hostile_file_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / 'ran'
    path = tmp_path / 'hostile.pth'
    torch.save({'model': ViT3().state_dict(), 'payload': Explosive(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match='system'):
        ViT3(init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()
    result = subprocess.run([sys.executable, str(REPO / 'tools' / 'convert_checkpoint.py'),
                             str(path), str(tmp_path / 'out.pth')],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and '--trusted' in result.stderr
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


@pytest.mark.parametrize('file_arch,model_arch,match', [
    ('tiny', 'small', r'holds a ViT3 tiny, the model is a ViT3 small.*model entries the file lacks'),
    ('base', 'tiny', r'holds a ViT3 base.*shape mismatches: .*file \(96'),
])
def test_checkpoint_for_another_arch_is_a_clear_error(file_arch, model_arch, match):
    ckpt = classification_layout(file_arch)
    with pytest.raises(CheckpointMismatchError, match=match):
        checkpoint_filter_fn(ckpt, ViT3(arch=model_arch))


def test_whole_model_checkpoint_must_fit_the_backbone():
    """``load_from`` / ``resume`` (through mmvit3's ``CheckpointSafetyHook``):
    a detector checkpoint whose backbone has another arch is refused before
    anything loads; a fitting one, a non-ViT3 model and a file without
    weights are left to mmengine; a backbone-only file is pointed to
    ``init_cfg``."""
    small = dict(embed_dims=[32, 64, 64, 96], depths=[1, 2, 1, 1])
    deeper = dict(embed_dims=[32, 64, 64, 96], depths=[1, 2, 2, 1])
    wider = dict(embed_dims=[32, 64, 96, 96], depths=[1, 2, 1, 1])

    def detector(arch):
        model = torch.nn.Module()
        model.backbone = ViT3(arch=arch)
        model.neck = torch.nn.Linear(2, 2)
        return model

    def runner_file(model, ddp=False):
        prefix = 'module.' if ddp else ''
        return {'meta': {'iter': 4}, 'optimizer': {},
                'state_dict': {prefix + k: v for k, v in model.state_dict().items()}}

    model = detector(small)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_model_checkpoint(model, runner_file(detector(small)))
    check_model_checkpoint(model, runner_file(detector(small), ddp=True))
    with pytest.raises(CheckpointMismatchError, match=r'model entries the file lacks: '
                       r'layers\.2\.blocks\.1\.'):
        check_model_checkpoint(detector(deeper), runner_file(model))
    with pytest.raises(CheckpointMismatchError, match=r'set arch to match.*shape mismatches'):
        check_model_checkpoint(model, runner_file(detector(wider)))
    with pytest.raises(CheckpointMismatchError, match=r'backbone alone.*init_cfg'):
        check_model_checkpoint(model, {'model': ViT3(arch=small).state_dict()})
    other = torch.nn.Module()
    other.backbone = torch.nn.Linear(2, 2)
    check_model_checkpoint(other, runner_file(model))
    check_model_checkpoint(model, {'meta': {}, 'note': 'no weights'})
    check_model_checkpoint(model, {'state_dict': {'neck.weight': torch.zeros(2, 2)}})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_released_detection_layout(tmp_path):
    """mmengine format: 'state_dict' with 'backbone.' + spec names, RoPE
    buffers, neck and heads."""
    source = ViT3(arch='tiny')
    sd = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    sd['backbone.layers.0.blocks.0.attn.rope.rotations'] = torch.randn(56, 56, 32, 2)
    sd['neck.lateral_convs.0.conv.weight'] = torch.randn(256, 64, 1, 1)
    sd['rpn_head.rpn_conv.weight'] = torch.randn(256, 256, 3, 3)
    path = tmp_path / 'mask_rcnn.pth'
    torch.save({'state_dict': sd, 'meta': {'epoch': 12}}, path)
    model = ViT3(arch='tiny', out_indices=(1, 2, 3))
    report = load_pretrained(model, str(path))
    assert report.source_key == 'state_dict' and not report.untouched
    dropped = {n for names in report.dropped.values() for n in names}
    assert {'neck.lateral_convs.0.conv.weight', 'norm0.weight',
            'layers.0.blocks.0.attn.rope.rotations'} <= dropped
    assert_loaded(model, source.state_dict())


def test_rope_tables_dropped_by_every_load_path(log_lines):
    """The backbone itself drops the released RoPE tables: a strict
    ``load_state_dict`` and mmengine's (``load_from``, ``resume``,
    ``tools/test.py``) load the released layout with nothing unexpected, and
    say once, at info level, what they dropped."""
    from mmengine.runner.checkpoint import load_state_dict

    arch = dict(embed_dims=[32, 64, 64, 96], depths=[1, 2, 1, 1])  # small: fast
    source = ViT3(arch=arch)
    for p in source.parameters():
        p.data.normal_(0, 0.05)
    weights = source.state_dict()
    released = {**weights, **rope_tables(source)}
    model = ViT3(arch=arch)
    result = model.load_state_dict(released, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_loaded(model, weights)
    assert len(released) == len(weights) + 5  # the caller's dict is kept
    dropped = [line for line in log_lines if 'rope.rotations' in line]
    assert len(dropped) == 1 and 'dropped 5' in dropped[0], log_lines

    # a detector: 'backbone.' prefix, through mmengine's loader
    detector = torch.nn.Module()
    detector.backbone = ViT3(arch=arch)
    detector.neck = torch.nn.Conv2d(4, 4, 1)
    released = {f'backbone.{k}': v for k, v in released.items()}
    released.update({f'neck.{k}': v for k, v in detector.neck.state_dict().items()})
    log_lines.clear()
    load_state_dict(detector, released, strict=True)  # raises on any mismatch
    assert_loaded(detector.backbone, weights)
    assert sum('rope.rotations' in line for line in log_lines) == 1, log_lines
    assert not any('unexpected' in line for line in log_lines)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_pretrained(ViT3(), str(tmp_path / 'nope.pth'))
