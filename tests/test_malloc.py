"""mmvit3.tuning: on glibc, CPU runs reuse the memory a step frees
(no fresh pages to fault in, no trimming), and users can turn it off; the
fused kernels' matrix products follow what torch reports of the CPU, and
``MMVIT3_TUNING`` forces them."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from _helpers import SEG_CFG, seg_data_overrides

from mmvit3 import tuning as malloc
from mmvit3.cli import runner as tools
from mmvit3.errors import ConfigError
from mmvit3.kernels import linear_cpu

# Runs in a process of its own (mallopt is process-wide): allocates and frees
# a 64 MiB tensor a few times, then frees a 512 MiB one; prints the page
# faults of each allocation and the resident memory around the last free.
PROBE = textwrap.dedent("""
    import json, resource, torch
    from mmvit3.tuning import keep_freed_memory

    def rss_mib():
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    applied = keep_freed_memory()
    faults = []
    for _ in range(6):
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = torch.empty(2**24).fill_(1.0)  # 64 MiB
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
        del t
    big = torch.ones(2**27)  # 512 MiB
    before = rss_mib()
    del big
    print(json.dumps(dict(applied=applied, faults=faults, freed_mib=before - rss_mib())))
""")

needs_glibc = pytest.mark.skipif(not malloc.malloc_tunable(), reason='glibc only')


def probe(env_value=None):
    env = {k: v for k, v in os.environ.items() if k != malloc.ENV_VAR}
    if env_value is not None:
        env[malloc.ENV_VAR] = env_value
    out = subprocess.run([sys.executable, '-c', PROBE], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.fixture(scope='module')
def probes():
    """The probe with the project's setting and with glibc's default."""
    return probe(), probe('default')


@needs_glibc
def test_freed_memory_is_reused_and_kept(probes):
    """Against glibc as it is (whatever page size the kernel hands out): a
    64 MiB tensor after the first ones takes a small share of the page
    faults, and freeing 512 MiB gives back a small share of the memory."""
    keep, default = probes
    assert keep['applied'] and not default['applied']
    assert max(keep['faults'][-3:]) * 8 < min(default['faults']), (keep, default)
    assert keep['freed_mib'] * 8 < default['freed_mib'], (keep, default)


@needs_glibc
def test_default_leaves_glibc_as_it_is(probes):
    """glibc maps each large block and unmaps it when freed: every 64 MiB
    tensor faults its pages in anew, and the 512 MiB one goes back."""
    _, default = probes
    assert min(default['faults']) >= max(default['faults']) // 2 > 0, default
    assert default['freed_mib'] > 512 / 2, default


def test_bad_setting_is_an_error_naming_the_choices(monkeypatch):
    monkeypatch.setenv(malloc.ENV_VAR, 'fast')
    with pytest.raises(ValueError, match='MMVIT3_MALLOC.*keep.*default'):
        malloc.keep_freed_memory()


def test_nothing_to_do_off_glibc(monkeypatch):
    monkeypatch.delenv(malloc.ENV_VAR, raising=False)
    monkeypatch.setattr(malloc.platform, 'libc_ver', lambda: ('', ''))
    assert not malloc.keep_freed_memory()


def test_the_matrix_product_choice_follows_what_torch_reports_of_the_cpu():
    """oneDNN where torch's CPU kernels use AVX-512, the BLAS with AVX2 alone
    (ATEN_CPU_CAPABILITY=avx2 makes this CPU report AVX2 to torch)."""
    capability = torch.backends.cpu.get_cpu_capability()
    expected = linear_cpu.onednn_available() and capability.startswith('AVX512')
    assert linear_cpu.onednn_linear_default() == expected
    assert malloc.choices()['linear'] == (
        f"{'oneDNN' if expected else 'BLAS'} float32 matrix products "
        f"(torch's CPU kernels: {capability})")
    code = 'from mmvit3 import tuning; print(tuning.choices()["linear"])'
    env = dict(os.environ, ATEN_CPU_CAPABILITY='avx2')
    env.pop(malloc.TUNING_ENV_VAR, None)
    out = subprocess.run([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    assert out.strip() == "BLAS float32 matrix products (torch's CPU kernels: AVX2)"


@pytest.mark.skipif(not linear_cpu.onednn_available(), reason='torch without oneDNN')
def test_mmvit3_tuning_forces_a_choice_and_names_what_it_takes(monkeypatch):
    try:
        for text, onednn in (('linear=blas', False), (' linear = ONEDNN ', True),
                             ('linear=auto', linear_cpu.onednn_linear_default()),
                             ('', linear_cpu.onednn_linear_default())):
            monkeypatch.setenv(malloc.TUNING_ENV_VAR, text)
            malloc.apply_overrides()
            assert linear_cpu.onednn_linear() == onednn, text
            forced = 'auto' not in text and text
            assert ('forced by MMVIT3_TUNING' in malloc.choices()['linear']) == bool(forced)
        for text in ('linear=fast', 'speed=max', 'linear'):
            monkeypatch.setenv(malloc.TUNING_ENV_VAR, text)
            with pytest.raises(ConfigError, match='MMVIT3_TUNING.*linear=onednn|blas|auto'):
                malloc.apply_overrides()
    finally:
        linear_cpu.set_onednn_linear(None)


def test_forcing_onednn_without_it_is_an_error_naming_the_way_out(monkeypatch):
    monkeypatch.setattr(linear_cpu, 'onednn_available', lambda: False)
    monkeypatch.setenv(malloc.TUNING_ENV_VAR, 'linear=onednn')
    with pytest.raises(ConfigError, match='no oneDNN linear op; use linear=blas or linear=auto'):
        malloc.apply_overrides()
    assert not linear_cpu.onednn_linear_forced()


class _Stop(Exception):
    pass


def _run_train_tool(demo_root, tmp_path):
    """tools/train.py's run on the segmentation demo: its exit status, or
    ``_Stop`` once its Runner is built."""
    from mmvit3.cli import train
    args = train.parse_args([SEG_CFG, '--work-dir', str(tmp_path), '--cfg-options',
                             *seg_data_overrides(demo_root)])
    cfg = train.build_cfg(args)

    def stop(runner):
        raise _Stop

    return tools.run_runner(cfg, args, 'train', ['train'], prepare=stop)


@pytest.mark.skipif(torch.cuda.is_available(), reason='a CPU run')
def test_cpu_training_keeps_freed_memory(demo_root, tmp_path, monkeypatch):
    calls, logged = [], []
    monkeypatch.setattr(tools, 'keep_freed_memory', lambda: calls.append(1) or True)
    # mmengine's logger may hold a stream from before capture: record the calls
    monkeypatch.setattr(tools, 'print_log', lambda msg, *a, **k: logged.append(msg))
    with pytest.raises(_Stop):
        _run_train_tool(demo_root, tmp_path)
    assert calls == [1]
    assert any('malloc keeps freed memory' in msg for msg in logged), logged
    assert f"CPU run: {malloc.choices()['linear']}" in logged  # the choice, in the log


@pytest.mark.parametrize('var,value,message', [
    (malloc.ENV_VAR, 'fast', 'MMVIT3_MALLOC must be'),
    (malloc.TUNING_ENV_VAR, 'linear=fast', "MMVIT3_TUNING: cannot read 'linear=fast'")])
def test_bad_setting_stops_the_tools_before_building(demo_root, tmp_path, monkeypatch,
                                                     capsys, var, value, message):
    from mmvit3.cli import train
    monkeypatch.setenv(var, value)
    assert train.main([SEG_CFG, '--work-dir', str(tmp_path), '--cfg-options',
                       *seg_data_overrides(demo_root)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # stopped before the Runner wrote anything
