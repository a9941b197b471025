"""The tracking suite: nncore's benchmark families as pytest-benchmark tests.

Not part of the test suite (pyproject's testpaths is ["tests"]); run it
explicitly, save a baseline, and compare later commits against it:

    pip install '.[bench]'
    pytest benchmarks --benchmark-autosave          # saves .benchmarks/<machine>/0001_*.json
    pytest benchmarks --benchmark-compare           # against the last saved run
    pytest benchmarks --benchmark-compare=0001 --benchmark-compare-fail=median:10%

Options: --bench-threads N (default 2: nncore, NumPy's BLAS and PyTorch),
--bench-peers LIST (default numpy,torch,sklearn: those that import; "none"
for nncore alone), --bench-full (the full sizes of `python -m nncore bench`;
default: its --quick sizes). Each benchmark's group is its case, so the
report puts nncore and its peers side by side.
"""
import pytest

from nncore import bench


def pytest_addoption(parser):
    group = parser.getgroup("nncore benchmarks")
    group.addoption("--bench-threads", type=int, default=2,
                    help="threads for nncore, NumPy's BLAS and PyTorch (default 2)")
    group.addoption("--bench-peers", default="numpy,torch,sklearn",
                    help="comma-separated peers to time next to nncore, or 'none'")
    group.addoption("--bench-full", action="store_true",
                    help="full sizes (default: the --quick sizes)")


def _peers(config):
    option = config.getoption("--bench-peers")
    return [] if option == "none" else bench.available_peers(option.split(","))


def pytest_generate_tests(metafunc):
    """Parametrize `case` with the module's cases(quick) and `side` with
    nncore plus the selected peers among the module's SIDES."""
    config = metafunc.config
    if "case" in metafunc.fixturenames:
        cases = metafunc.module.cases(quick=not config.getoption("--bench-full"))
        metafunc.parametrize("case", cases, ids=[metafunc.module.case_id(c) for c in cases])
    if "side" in metafunc.fixturenames:
        peers = _peers(config)
        metafunc.parametrize("side", ["nncore"] + [p for p in metafunc.module.SIDES
                                                   if p in peers])


@pytest.fixture(scope="session")
def peers(request):
    return _peers(request.config)


@pytest.fixture(scope="session", autouse=True)
def threads(request):
    with bench.thread_limits(request.config.getoption("--bench-threads")) as n:
        yield n
