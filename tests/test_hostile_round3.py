"""Hostile and broken inputs, third round: text stored in a checkpoint is
data, opt-ins are booleans scoped to the loads they were given for, damaged
bytes inside a tensor record are named, downloads are keyed by their whole
URL and time out, a new run never replaces an earlier run's checkpoints, a
resume that changes the optimizer says so, and every bad argument or file
is one clear line with exit status 2.

Servers run on 127.0.0.1 only (threads of this process); a hostile file or
config creates a marker file when its code runs.
"""
import io
import re
import socket
import struct
import threading
import time
import zipfile

import pytest
import torch
from _helpers import (DET_CFG, ROOT, SEG_CFG, demo_cfg, demo_model, loader_overrides,
                      make_demo_data, seg_data_overrides)
from mmengine.runner import CheckpointLoader
from test_hostile import run, seg_options, seg_train_options, server, toy_runner  # noqa: F401

import mmvit3
from mmvit3.errors import (CheckpointDownloadError, ConfigError, CorruptCheckpointError,
                           EarlierRunError, ProjectKeyError, UnsafeCheckpointError)
from mmvit3.safe_load import (load_checkpoint_file, load_policy, stored_config_problem,
                              trust_checkpoints)

EVIL_CONFIG = "import os\nos.system('touch {marker}')\nx = 1\n"


def seg_checkpoint(path, **meta):
    """A whole-model checkpoint of the segmentation demo, with ``meta``."""
    model = demo_model(demo_cfg(SEG_CFG))
    torch.save({'meta': dict(iter=1, epoch=0, **meta), 'state_dict': model.state_dict(),
                'message_hub': {}}, path)
    return path


# --------------------------------------------------------------------------
# text stored in a checkpoint is data


@pytest.mark.parametrize('text,problem', [
    ("a = 1\nb = dict(type='ViT3', arch='tiny', sizes=(1, -2.5), on=True, n=None)\n"
     "c = [dict(x={'k': [1, 2]})]\n", None),
    ("custom_imports = dict(imports=['mmvit3'], allow_failed_imports=False)\n", None),
    ('import os\n', 'Import'),
    ("x = __import__('os').system('true')\n", 'Call code'),
    ('x = (lambda: 1)()\n', 'Call code'),
    ("x = open('/etc/passwd').read()\n", 'Call code'),
    ('x = y.attr\n', 'Attribute code'),
    ("_base_ = ['/tmp/other.py']\n", 'names _base_ files'),
    ("custom_imports = dict(imports=['my_project.hooks'])\n", None),
    ("custom_imports = dict(imports=['os; import sys'])\n", 'no module names'),
    ('def f():\n    pass\n', 'FunctionDef'),
])
def test_a_stored_config_must_be_values_only(text, problem):
    found = stored_config_problem(text)
    if problem is None:
        assert found is None, found
    else:
        assert found is not None and problem in found, found


def test_code_in_a_stored_config_never_runs(tmp_path, demo_root):
    """A checkpoint whose meta.config runs a command: refused by the loader
    (mmengine's resume and the inferencers run that text to read it), by
    tools/train.py --resume and tools/test.py (exit 2, one line), and by
    DetInferencer; the opt-in loads it."""
    marker = tmp_path / 'code_ran'
    path = seg_checkpoint(tmp_path / 'evil.pth', config=EVIL_CONFIG.format(marker=marker))
    with pytest.raises(UnsafeCheckpointError, match=r'meta\.config.*line 1 is a Import'):
        load_checkpoint_file(str(path))
    with pytest.raises(UnsafeCheckpointError):
        CheckpointLoader.load_checkpoint(str(path))
    for args in (('tools/train.py', SEG_CFG, '--resume', path, '--work-dir', tmp_path / 'w',
                  *seg_train_options(demo_root, iters=2)),
                 ('tools/test.py', SEG_CFG, path, '--work-dir', tmp_path / 't',
                  *seg_options(demo_root))):
        rc, out = run(*args)
        assert rc == 2, out[-3000:]
        assert 'meta.config' in out and 'Traceback' not in out, out[-3000:]
    from mmdet.apis import DetInferencer
    det = demo_model(demo_cfg(DET_CFG))
    det_path = tmp_path / 'det.pth'
    # the inferencers build the model from message_hub.runtime_info.cfg, else
    # meta.cfg (resume reads meta.config)
    for where, place in (('message_hub', {'message_hub': {'runtime_info': {'cfg': None}}}),
                         ('meta.cfg', {'meta': {'cfg': None}})):
        text = EVIL_CONFIG.format(marker=marker)
        holder = place.get('meta') or place['message_hub']['runtime_info']
        holder['cfg'] = text
        torch.save({'meta': {}, **place, 'state_dict': det.state_dict()}, det_path)
        with pytest.raises(UnsafeCheckpointError, match=re.escape(where)):
            DetInferencer(weights=str(det_path), device='cpu')
    assert not marker.exists()
    with trust_checkpoints():
        load_checkpoint_file(str(path))  # trusted: loaded, the text not run here
    assert not marker.exists()


# --------------------------------------------------------------------------
# opt-ins: booleans, for the loads they were given for


def test_opt_in_keys_are_booleans(demo_root, tmp_path, capsys):
    from mmvit3.cli import train
    rc = train.main([SEG_CFG, '--work-dir', str(tmp_path),
                     *seg_train_options(demo_root, 'trust_checkpoint=no')])
    said = [line for line in capsys.readouterr().err.splitlines()
            if line.startswith('tools/train.py: ')]
    assert rc == 2 and said, said
    assert said[-1] == "tools/train.py: trust_checkpoint must be True or False, got 'no'"
    assert not list(tmp_path.glob('*.pth'))
    with pytest.raises(ConfigError, match="allow_partial_checkpoint must be True or False"):
        toy_runner(tmp_path / 'toy', allow_partial_checkpoint='yes').train()
    with pytest.raises(ConfigError, match='trust_checkpoints'):
        trust_checkpoints('no')


def test_a_config_opt_in_ends_with_its_load_even_when_the_run_fails(tmp_path):
    """trust_checkpoint = True holds while the run loads its checkpoint, and
    not after: a run that fails leaves no trust behind for the next load in
    the same process."""
    runner = toy_runner(tmp_path, trust_checkpoint=True)
    seen = []

    def load_or_resume():
        seen.append(load_policy().trusted)
        raise RuntimeError('the load failed')

    runner.load_or_resume = load_or_resume
    with pytest.raises(RuntimeError, match='the load failed'):
        runner.train()
    assert seen == [True]
    assert load_policy().trusted is False
    with trust_checkpoints():
        assert load_policy().trusted
    assert not load_policy().trusted
    trust_checkpoints()  # not entered: changes nothing
    assert not load_policy().trusted


def test_misspelt_opt_out_keys_are_named(tmp_path):
    from mmvit3.config import check_project_keys
    for key, meant in (('allow_nonfinite_weight', 'allow_nonfinite_weights'),
                       ('allow_partial_checkpoints', 'allow_partial_checkpoint'),
                       ('overwrite_checkpoint', 'overwrite_checkpoints')):
        with pytest.raises(ProjectKeyError, match=f"did you mean '{meant}'"):
            check_project_keys({key: True})


def test_the_opt_out_keys_each_let_a_refused_train_run_proceed(tmp_path):
    """tools/train.py on a setup that the checks of four keys each refuse: a
    work dir with an earlier run's checkpoint, a validation label map of
    another size than its image (harmless here: the run does not validate)
    and a load_from file with NaN in an entry the model has not and nothing
    for its auxiliary head. Without any one key the run stops naming it; with all four it
    trains from the loaded weights and replaces the earlier checkpoint."""
    from PIL import Image
    root = tmp_path / 'demo'
    make_demo_data.make_demo_data(str(root), num_train=2, num_val=1, size=64)
    label = root / 'ade' / 'annotations' / 'validation' / 'val_00000.png'
    Image.open(label).resize((96, 96), Image.NEAREST).save(label)
    state = demo_model(demo_cfg(SEG_CFG)).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith('auxiliary_head.')}
    state['decode_head.conv_seg.bias'].fill_(7.)  # to tell the loaded weights
    state['old_head.conv_seg.weight'] = torch.tensor([float('nan')])  # not loaded
    torch.save({'state_dict': state}, tmp_path / 'partial_nan.pth')
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'iter_1.pth').write_bytes(b'an earlier run')
    keys = {'overwrite_checkpoints': 'earlier run (iter_1.pth)',
            'check_annotations': 'val_00000.png',
            'allow_nonfinite_weights': 'old_head.conv_seg.weight',
            'allow_partial_checkpoint': 'auxiliary_head'}
    args = ['tools/train.py', SEG_CFG, '--work-dir', work,
            *seg_train_options(root, f'load_from={tmp_path / "partial_nan.pth"}',
                               'default_hooks.checkpoint.interval=1')]
    for left_out, named in keys.items():
        rc, out = run(*args, *[f'{k}=True' if k != 'check_annotations' else f'{k}=False'
                               for k in keys if k != left_out])
        assert rc == 2 and named in out and left_out in out, (left_out, out[-3000:])
        assert (work / 'iter_1.pth').read_bytes() == b'an earlier run'
    rc, out = run(*args, 'overwrite_checkpoints=True', 'check_annotations=False',
                  'allow_nonfinite_weights=True', 'allow_partial_checkpoint=True')
    assert rc == 0, out[-3000:]
    trained = torch.load(work / 'iter_1.pth', map_location='cpu', weights_only=False)['state_dict']
    assert torch.allclose(trained['decode_head.conv_seg.bias'], torch.tensor(7.), atol=1e-2)


# --------------------------------------------------------------------------
# damaged bytes, impossible tensors


def test_bytes_changed_inside_a_tensor_record_are_named(tmp_path, demo_root):
    path = seg_checkpoint(tmp_path / 'ok.pth')
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if '/data/' in i.filename and
                    i.file_size > 1000)
    # the record's bytes start after its local header (30 bytes, name, extra)
    name_len, extra_len = struct.unpack('<HH', data[info.header_offset + 26:
                                                    info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    bad = tmp_path / 'flipped.pth'
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=rf'{bad}.*fails its CRC-32'):
        load_checkpoint_file(str(bad))
    rc, out = run('tools/test.py', SEG_CFG, bad, '--work-dir', tmp_path / 't',
                  *seg_options(demo_root))
    assert rc == 2 and 'CRC-32' in out and 'Traceback' not in out, out[-3000:]


def test_a_tensor_with_impossible_strides_is_named(tmp_path, demo_root):
    """A tensor whose strides reach far beyond its storage (torch's legacy
    format, which allocates what the file claims): the file is named as
    corrupt by the loader and by tools/test.py (exit 2), not reported as the
    run running out of memory."""
    buffer = io.BytesIO()
    torch.save({'state_dict': {'w': torch.arange(6.)}}, buffer,
               _use_new_zipfile_serialization=False)
    # the stride (1,) as pickled (BININT1 1, TUPLE1): make it 2**31 - 1
    data = buffer.getvalue().replace(b'K\x01\x85', b'J\xff\xff\xff\x7f\x85', 1)
    path = tmp_path / 'strides.pth'
    path.write_bytes(data)
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(path))):
        load_checkpoint_file(str(path))
    rc, out = run('tools/test.py', SEG_CFG, path, '--work-dir', tmp_path / 't',
                  *seg_options(demo_root))
    assert rc == 2, out[-3000:]
    assert f'Checkpoint {path} is corrupt' in out and 'Out of memory' not in out, out[-3000:]


# --------------------------------------------------------------------------
# downloads


def test_two_urls_with_one_file_name_are_two_downloads(server, tmp_path, monkeypatch):
    root, base = server
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    for folder, value in (('a', 1.), ('b', 2.)):
        (root / folder).mkdir(exist_ok=True)
        torch.save({'state_dict': {'w': torch.full((2, ), value)}}, root / folder / 'same.pth')
    a = CheckpointLoader.load_checkpoint(f'{base}/a/same.pth')
    b = CheckpointLoader.load_checkpoint(f'{base}/b/same.pth')
    assert a['state_dict']['w'][0] == 1. and b['state_dict']['w'][0] == 2.
    cached = sorted(p.name for p in (tmp_path / 'torch' / 'hub' / 'checkpoints').iterdir())
    assert len(cached) == 2 and all(n.startswith('same-') for n in cached), cached


def test_a_server_that_never_answers_times_out(tmp_path, monkeypatch):
    """A server that accepts the connection and sends nothing: the download
    gives up after MMVIT3_DOWNLOAD_TIMEOUT seconds, naming the URL."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    held = []
    done = threading.Event()

    def accept():
        listener.settimeout(10)
        try:
            held.append(listener.accept()[0])  # and never answer
        except OSError:
            pass
        done.wait(10)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('MMVIT3_DOWNLOAD_TIMEOUT', '1')
    url = f'http://127.0.0.1:{listener.getsockname()[1]}/never.pth'
    start = time.monotonic()
    try:
        with pytest.raises(CheckpointDownloadError, match=re.escape(url) + '.*no answer within 1'):
            CheckpointLoader.load_checkpoint(url)
        assert time.monotonic() - start < 8
    finally:
        done.set()
        for conn in held:
            conn.close()
        listener.close()
        thread.join(10)
    assert not list((tmp_path / 'torch').rglob('never*'))
    monkeypatch.setenv('MMVIT3_DOWNLOAD_TIMEOUT', 'soon')
    with pytest.raises(ConfigError, match="MMVIT3_DOWNLOAD_TIMEOUT must be a positive number"):
        CheckpointLoader.load_checkpoint(url)


# --------------------------------------------------------------------------
# runs


def test_a_new_run_never_replaces_an_earlier_runs_checkpoints(tmp_path, demo_root):
    (tmp_path / 'iter_2.pth').write_bytes(b'an earlier run')
    rc, out = run('tools/train.py', SEG_CFG, '--work-dir', tmp_path,
                  *seg_train_options(demo_root))
    assert rc == 2, out[-3000:]
    assert 'earlier run (iter_2.pth)' in out and '--overwrite' in out
    assert (tmp_path / 'iter_2.pth').read_bytes() == b'an earlier run'
    # mmengine's own tools: the same through WorkDirLockHook
    with pytest.raises(EarlierRunError, match='iter_2.pth'):
        toy_runner(tmp_path).train()
    assert (tmp_path / 'iter_2.pth').read_bytes() == b'an earlier run'
    toy_runner(tmp_path, overwrite_checkpoints=True).train()  # asked: replaced
    assert (tmp_path / 'iter_6.pth').is_file()


def test_a_resume_that_changes_the_optimizer_says_so(tmp_path, capsys):
    toy_runner(tmp_path, max_iters=2).train()
    logged = []
    from mmvit3.engine import hooks
    real = hooks.print_log
    hooks.print_log = lambda msg, *a, **k: (logged.append(msg), real(msg, *a, **k))
    try:
        runner = toy_runner(tmp_path, max_iters=4, resume=True)
        runner.cfg.optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.5))
        runner.optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.5))
        runner.train()
    finally:
        hooks.print_log = real
    said = [m for m in logged if 'otherwise than the checkpoint' in m]
    assert said and 'lr 0.01 in the checkpoint, 0.5 in the config' in said[0], logged


# --------------------------------------------------------------------------
# clear errors for bad arguments and files


@pytest.mark.parametrize('kwargs,named', [
    (dict(drop_path_rate=1.5), "drop_path_rate must be in [0, 1), got 1.5"),
    (dict(drop_rate=-0.1), "drop_rate must be in [0, 1), got -0.1"),
    (dict(mlp_ratio=0), 'mlp_ratio must be a positive number, got 0'),
    (dict(in_channels=0), 'in_channels must be a positive integer, got 0'),
    (dict(frozen_stages=7), 'frozen_stages must be an integer in [-1, 4], got 7'),
    (dict(norm_eval='yes'), "norm_eval must be True or False, got 'yes'"),
    (dict(with_cp=None), 'with_cp must be True or False, got None'),
    (dict(out_indices='all'), "out_indices must be one index or a non-empty list"),
    (dict(arch=3), 'arch must be a str or a dict, got 3'),
    (dict(impl='fast'), "impl must be one of"),
])
def test_every_backbone_argument_is_checked_and_named(kwargs, named):
    for cls in (mmvit3.ViT3, mmvit3.PlainViT3):
        if 'frozen_stages' in kwargs and cls is mmvit3.PlainViT3:
            kwargs, named = dict(frozen_stages=13), 'frozen_stages must be an integer in [-1, 12]'
        with pytest.raises(ConfigError, match=re.escape(named)):
            cls(**kwargs)
    with pytest.raises(ConfigError, match='patch_size must be a positive integer'):
        mmvit3.PlainViT3(patch_size=0)


def test_export_errors_name_the_argument(tmp_path):
    from mmvit3.deploy import dynamic_hw, export_onnx
    model = mmvit3.ViT3(arch=dict(embed_dims=[32, 32, 32, 32], depths=[1, 1, 1, 1]))
    with pytest.raises(ConfigError, match=r'example_size must be \(height, width\).*got \(8, 8\)'):
        export_onnx(model, tmp_path / 'm.onnx', example_size=(8, 8))
    with pytest.raises(ConfigError, match='batch must be a positive integer, got 0'):
        export_onnx(model, tmp_path / 'm.onnx', batch=0)
    with pytest.raises(ConfigError, match='model must be a ViT3 / PlainViT3 backbone'):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / 'm.onnx')
    from mmvit3.errors import OutputError
    with pytest.raises(OutputError, match='does not exist'):
        export_onnx(model, tmp_path / 'no' / 'm.onnx')
    with pytest.raises(ConfigError, match='min_size=8'):
        dynamic_hw(min_size=8)


def test_config_mistakes_exit_2_with_one_line(demo_root, tmp_path):
    """An unknown arch in --cfg-options and a misspelt key in a config file:
    one message naming the value or key, exit status 2, no traceback."""
    typo = tmp_path / 'typo.py'
    typo.write_text(f"_base_ = '{ROOT / SEG_CFG}'\n"
                    "model = dict(backbone=dict(archh='tiny'))\n")
    for config, extra, said in (
            (SEG_CFG, ['model.backbone.arch=huge'], "Unknown ViT3 arch 'huge'"),
            (typo, [], "takes no argument 'archh', which the config sets at "
                       "model.backbone.archh. Did you mean: 'arch'?")):
        rc, out = run('tools/train.py', config, '--work-dir', tmp_path / 'w',
                      *seg_train_options(demo_root, *extra))
        assert rc == 2, out[-3000:]
        assert said in out and 'Traceback' not in out, out[-3000:]


def test_image_demo_exits_2_for_a_corrupt_or_nonfinite_checkpoint(tmp_path, demo_root):
    image = next((demo_root / 'ade' / 'images' / 'validation').iterdir())
    corrupt = tmp_path / 'cut.pth'
    corrupt.write_bytes(seg_checkpoint(tmp_path / 'ok.pth').read_bytes()[:5000])
    model = demo_model(demo_cfg(SEG_CFG))
    state = model.state_dict()
    next(v for v in state.values() if v.is_floating_point()).fill_(float('nan'))
    nonfinite = tmp_path / 'nan.pth'
    torch.save({'meta': {}, 'state_dict': state}, nonfinite)
    for ckpt, said in ((corrupt, 'is incomplete'), (nonfinite, 'non-finite weights')):
        rc, out = run('tools/image_demo.py', image, SEG_CFG, ckpt, '--out-dir', tmp_path / 'o')
        assert rc == 2, out[-3000:]
        assert said in out and 'Traceback' not in out, out[-3000:]


@pytest.mark.parametrize('workers', [0, 1])
def test_a_bad_image_in_the_dataset_exits_2_with_one_line(tmp_path, demo_root, workers):
    import shutil
    root = tmp_path / 'data'
    shutil.copytree(demo_root, root)
    victim = sorted((root / 'ade' / 'images' / 'training').iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])  # cut short
    rc, out = run('tools/train.py', SEG_CFG, '--work-dir', tmp_path / 'w', '--cfg-options',
                  *seg_data_overrides(root), 'train_cfg.max_iters=2',
                  'train_cfg.val_begin=1000', 'train_dataloader.batch_size=2',
                  'data_root=' + f'{root}/ade/',
                  # past the dataset check (which names the file first): the loader's stop,
                  # in the main process and in a worker
                  'check_annotations=False',
                  *loader_overrides('', num_workers=workers, persistent_workers=False))
    assert rc == 2, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith('tools/train.py: ')]
    assert lines and f'Bad image file {victim}' in lines[-1], out[-3000:]
    assert 'Original Traceback' not in lines[-1]
