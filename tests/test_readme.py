"""Every command in the shell blocks of the README and docs/ is run by a
test: the test takes its argv from the page (``page_command`` of
tests/_helpers.py, adding only what a run on the tiny demo data needs), so
that a changed command changes what the test runs. The commands that cannot
run here (the COCO / ADE20K recipes, downloads, multi-GPU launchers, make)
are listed in NOT_RUN, each with how it is covered instead. A new command
that neither claims fails here. The pages' Python blocks parse."""
import ast
import re

import pytest
from _helpers import PAGES, ROOT, TESTS, page_commands

#: Page commands no test runs (regex, matched from the start) -> how they are
#: covered instead, and by which tests.
NOT_RUN = {
    r'make (setup|test)$': ('CI runs make test (setup first) on a clean clone', ['.ci/run']),
    r'make demo$': ('its commands are the demo page\'s, run on the tiny data by',
                    ['tests/test_demo_pipeline.py::test_the_detection_demo_learns',
                     'tests/test_demo_pipeline.py::test_the_demo_picture_names_what_its_image_shows']),
    r'wget -O checkpoints/mask_rcnn_vit3_t_coco\.pth \'\S+\'$':
        ('a download (no network here): the URL is the Results table\'s, and the guide '
         'fine-tunes from a file of its layout',
         ['tests/test_finetune_guide.py::test_the_guide_shows_the_download_and_both_commands']),
    r'python tools/(train|test)\.py configs/(mask_rcnn_vit3_t_coco|upernet_vit3_t_ade20k)\.py'
    r'( CKPT| mask_rcnn_vit3_t_coco\.pth| \'https://\S+\')?$':
        ('COCO / ADE20K recipes: the same tools on the demo configs, the recipes\' models, '
         'pipelines and checkpoint layout; a model\'s link served from loopback',
         ['tests/test_demo_pipeline.py::test_the_detection_demo_learns',
          'tests/test_configs.py::test_model_builds',
          'tests/test_configs.py::test_multiscale_train_pipeline_runs',
          'tests/test_image_demo.py::test_released_detection_checkpoint_evaluates_cleanly',
          'tests/test_weights_from_urls.py::test_tools_test_and_load_from_take_the_authors_coco_link']),
    r'bash tools/dist_(train|test)\.sh configs/mask_rcnn_vit3_t_coco\.py( \S+\.pth)? 8$':
        ('8 GPUs and COCO: the scripts\' torchrun command, and two CPU processes training',
         ['tests/test_launchers.py::test_dist_scripts_exec_torchrun',
          'tests/test_reliability.py::test_dist_train_two_cpu_processes_hold_identical_weights']),
    r'python tools/benchmark\.py --models vit3-t (vit3-t-plain swin-t r50 vit-s|swin-t) '
    r'--sizes (512 800x1344|1600x2688) |([A-Z_]+=\w+ )*python tools/benchmark\.py .*--out-dir '
    r'work_dirs/bench_(bf16|compile|linear|linear_avx2|parts_targets)$':
        ('minutes to hours of CPU: the same tool at a tiny size, as the breakdown command; '
         'the variants and forced tuning choices at a tiny size; the recorded tables '
         're-rendered from their results',
         ['tests/test_benchmark.py::test_run_writes_table_plot_and_results',
          'tests/test_benchmark.py::test_variants_are_measured_apart_and_reported_against_fp32_eager_fixed',
          'tests/test_benchmark.py::test_a_tuning_choice_is_measured_both_ways_and_the_default_follows_the_cpu',
          'tests/test_benchmark.py::test_recorded_benchmark_tables_are_the_tools_output_of_their_results']),
}


def claimed_patterns():
    """{pattern: test file} of the page_command calls of the tests (a
    pattern must be a literal, so that it is seen here)."""
    claims = {}
    for path in sorted(TESTS.glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'page_command':
                arg = node.args[0]
                assert isinstance(arg, ast.Constant), f'{path.name}:{node.lineno}: not a literal'
                claims[arg.value] = path.name
    return claims


def test_every_page_command_is_run_by_a_test_or_says_why_not():
    commands = page_commands()
    assert len(commands) > 20
    claims = claimed_patterns()
    unrun = [c for c in commands if not any(re.match(p, c) for p in [*claims, *NOT_RUN])]
    assert not unrun, f'commands of README.md / docs/ that no test runs: {unrun}'
    both = [c for c in commands
            if any(re.match(p, c) for p in claims) and any(re.match(p, c) for p in NOT_RUN)]
    assert not both, f'run by a test, yet listed in NOT_RUN: {both}'


def test_each_test_runs_one_page_command():
    commands = page_commands()
    for pattern, where in claimed_patterns().items():
        found = [c for c in commands if re.match(pattern, c)]
        assert len(found) == 1, (where, pattern, found)


@pytest.mark.parametrize('pattern', sorted(NOT_RUN))
def test_each_command_not_run_is_on_a_page_and_its_tests_exist(pattern):
    assert any(re.match(pattern, c) for c in page_commands()), f'no page has {pattern!r}'
    for test in NOT_RUN[pattern][1]:
        path, _, name = test.partition('::')
        text = (ROOT / path).read_text()
        assert not name or re.search(rf'^def {name}\(', text, re.M), test


def test_readme_python_blocks_parse():
    blocks = [block for page in PAGES
              for block in re.findall(r'```python\n(.*?)```', page.read_text(), re.S)]
    assert len(blocks) >= 3
    for block in blocks:
        ast.parse(block)
