"""Fixtures shared by the test modules (helpers: tests/_helpers.py)."""
import logging

import pytest
from _helpers import page_command, run_tool
from mmengine.logging import MMLogger


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """A tiny demo data set (4 train, 2 val images of 64 px), COCO and ADE
    layouts, written once per session by the demo page's command."""
    out = tmp_path_factory.mktemp('data') / 'demo'
    rc, said = run_tool(*page_command(r'python tools/make_demo_data\.py'), '--out', out,
                        '--seed', 0, '--num-train', 4, '--num-val', 2, '--size', 64)
    assert rc == 0, said[-3000:]
    return out


@pytest.fixture
def log_lines():
    """The messages logged to mmengine's current logger during the test."""
    lines = []

    class Collect(logging.Handler):

        def emit(self, record):
            lines.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Collect()
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
