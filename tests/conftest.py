import pytest
from _helpers import load_tool


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """A tiny demo data set (4 train, 2 val images of 64x64 px) in both
    layouts, written once per test session."""
    out = tmp_path_factory.mktemp('data') / 'demo'
    load_tool('make_demo_data').make_demo_data(
        str(out), seed=0, num_train=4, num_val=2, size=64)
    return out
