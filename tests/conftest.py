"""Shared fixtures: every kernel test runs on every ISA path this CPU has."""
import numpy as np
import pytest

import nncore
from nncore import _core

ISAS = _core.isa_available()


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test with every kernel switched to one ISA path."""
    previous = _core.get_isa()
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(previous)


@pytest.fixture
def num_threads():
    """Restore the thread count after a test changes it."""
    previous = nncore.get_num_threads()
    yield
    nncore.set_num_threads(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
