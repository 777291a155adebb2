"""Every command in the shell blocks of the README and docs/ is run by a
test or by CI: each matches an entry of COVERED, which names the test that
runs that tool in that way (on the tiny demo data where the page's data is
COCO or ADE20K, which CI does not have), and that test exists. A new
command without a test fails here. The pages' Python blocks parse."""
import ast
import re

import pytest
from _helpers import ROOT

#: README command (regex, matched from its start) -> the tests running it.
COVERED = {
    r'make (setup|demo|test)$': ['.ci/run',
                                 'tests/test_demo_pipeline.py::test_detection_demo_train_and_test'],
    r'mkdir -p checkpoints$|wget -O checkpoints/\S+ \'\S+\'$':
        ['tests/test_finetune_guide.py::test_the_guide_shows_the_download_and_both_commands'],
    r'python tools/train\.py configs/my_finetune\.py( --cfg-options optim_wrapper\.type='
    r'OptimWrapper)?$': ['tests/test_finetune_guide.py::test_the_guide_fine_tunes_on_the_demo_data'],
    r'python tools/benchmark\.py ': ['tests/test_benchmark.py::test_run_writes_table_plot_and_results'],
    r'python tools/get_flops\.py configs/': ['tests/test_configs.py::test_get_flops_tool_runs',
                                             'tests/test_configs.py::test_params_and_flops_match_spec'],
    r'python tools/make_demo_data\.py': ['tests/test_demo_pipeline.py::test_make_demo_data_layout'],
    r'python tools/train\.py configs/demo/mask_rcnn_vit3_demo\.py( --work-dir \S+)?( --overwrite)?$':
        ['tests/test_demo_pipeline.py::test_detection_demo_train_and_test'],
    r'python tools/train\.py configs/demo/mask_rcnn_vit3_demo\.py --tensorboard$':
        ['tests/test_demo_pipeline.py::test_tensorboard_switch'],
    r'python tools/test\.py configs/demo/mask_rcnn_vit3_demo\.py \S+\.pth':
        ['tests/test_demo_pipeline.py::test_detection_demo_train_and_test'],
    r'python tools/train\.py configs/demo/upernet_vit3_demo\.py$':
        ['tests/test_demo_pipeline.py::test_segmentation_demo_train_resume_and_test'],
    r'python tools/test\.py configs/demo/upernet_vit3_demo\.py \S+\.pth$':
        ['tests/test_demo_pipeline.py::test_segmentation_demo_train_resume_and_test'],
    r'python tools/(train|test)\.py configs/demo/(mask_rcnn|upernet)_vit3_plain_demo\.py'
    r'( \S+\.pth)?$': ['tests/test_vit3_plain.py::test_demo_trains_and_tests'],
    r'python tools/train\.py configs/demo/mask_rcnn_vit3_finetune_demo\.py$':
        ['tests/test_ecosystem.py::test_fine_tuning_example_with_another_class_count'],
    r'python tools/image_demo\.py data/demo/images/val\S* configs/demo/mask_rcnn_vit3_demo\.py':
        ['tests/test_image_demo.py::test_image_demo_detection_folder'],
    r'python tools/image_demo\.py data/demo/ade/\S+ configs/demo/upernet_vit3_demo\.py':
        ['tests/test_image_demo.py::test_image_demo_segmentation_image'],
    # the recipes on COCO / ADE20K: the same tools on the demo configs
    # (above), the recipes' own models, pipelines and checkpoint layout here
    r'python tools/train\.py configs/(mask_rcnn_vit3_t_coco|upernet_vit3_t_ade20k)\.py$':
        ['tests/test_configs.py::test_model_builds',
         'tests/test_configs.py::test_multiscale_train_pipeline_runs',
         'tests/test_demo_pipeline.py::test_detection_demo_train_and_test'],
    r'python tools/test\.py configs/(mask_rcnn_vit3_t_coco|upernet_vit3_t_ade20k)\.py \S+$':
        ['tests/test_checkpoint.py::test_released_detection_layout',
         'tests/test_image_demo.py::test_released_detection_checkpoint_evaluates_cleanly',
         'tests/test_weights_from_urls.py::test_tools_test_and_load_from_take_the_authors_coco_link'],
    r'bash tools/dist_train\.sh \S+ \d+$':
        ['tests/test_reliability.py::test_dist_train_two_cpu_processes_hold_identical_weights',
         'tests/test_launchers.py::test_dist_scripts_exec_torchrun'],
    r'bash tools/dist_test\.sh \S+ \S+ \d+$': ['tests/test_launchers.py::test_dist_scripts_exec_torchrun'],
    r'python tools/check_dataset\.py configs/demo/mask_rcnn_vit3_demo\.py$':
        ['tests/test_data_check.py::test_tools_check_the_data_and_exit_2_naming_what_is_wrong'],
    r'python tools/convert_checkpoint\.py \S+ \S+( --trusted)?$':
        ['tests/test_checkpoint.py::test_convert_then_load_safely'],
}


PAGES = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))


def readme_blocks(lang):
    return [block for page in PAGES
            for block in re.findall(rf'```{lang}\n(.*?)```', page.read_text(), re.S)]


def readme_commands():
    commands = []
    for block in readme_blocks('bash'):
        for line in re.sub(r'\\\n\s*', ' ', block).splitlines():
            line = re.sub(r'\s+', ' ', line.split('#')[0]).strip()
            if line:
                commands.append(line)
    return commands


def test_every_readme_command_is_covered():
    commands = readme_commands()
    assert len(commands) > 10
    uncovered = [c for c in commands
                 if not any(re.match(p, c) for p in COVERED)]
    assert not uncovered, f'commands of README.md / docs/ that no test runs: {uncovered}'


@pytest.mark.parametrize('test', sorted({t for ts in COVERED.values() for t in ts}))
def test_the_covering_tests_exist(test):
    path, _, name = test.partition('::')
    text = (ROOT / path).read_text()
    assert not name or re.search(rf'^def {name}\(', text, re.M), test


def test_readme_python_blocks_parse():
    blocks = readme_blocks('python')
    assert len(blocks) >= 3
    for block in blocks:
        ast.parse(block)
