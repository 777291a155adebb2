"""Fixtures shared by the test modules (helpers: tests/_helpers.py)."""
import logging

import pytest
from _helpers import make_demo_data
from mmengine.logging import MMLogger


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """A tiny demo data set (4 train, 2 val images of 64 px), COCO and ADE
    layouts, written once per session."""
    out = tmp_path_factory.mktemp('data') / 'demo'
    make_demo_data.make_demo_data(
        str(out), seed=0, num_train=4, num_val=2, size=64)
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
