import logging

import pytest
from mmengine.logging import MMLogger


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
