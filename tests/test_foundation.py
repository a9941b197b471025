"""The build, CPU dispatch, threads and the first kernel through the stack."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import nncore
from nncore import _core


def run_python(*args, **env):
    """Run the installed nncore in a subprocess, outside the source tree (whose
    nncore/ has no compiled module)."""
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, *args], env=full_env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=120)


def test_info_fields():
    info = nncore.info()
    assert info["version"] == nncore.__version__
    assert info["isa"] in info["isa_available"]
    assert "generic" in info["isa_available"]
    assert info["num_threads"] == nncore.get_num_threads() >= 1
    assert info["openmp"] >= 200805
    assert info["compiler"] and "-O" in info["flags"]
    assert "-march=native" not in info["flags"] or os.environ.get("NNCORE_NATIVE")


def test_best_isa_is_default():
    out = run_python("-c", "import nncore; print(nncore.info()['isa'])", NNCORE_ISA="")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _core.isa_available()[-1]


@pytest.mark.parametrize("name", _core.isa_available())
def test_isa_env_override(name):
    out = run_python("-c", "import nncore; print(nncore.info()['isa'])", NNCORE_ISA=name)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name


def test_unknown_isa_env_is_an_import_error():
    out = run_python("-c", "import nncore", NNCORE_ISA="sse9")
    assert out.returncode != 0
    assert "ImportError" in out.stderr and "sse9" in out.stderr and "generic" in out.stderr


def test_unavailable_isa():
    missing = [i for i in _core.isa_names() if i not in _core.isa_available()]
    if not missing:
        pytest.skip("this CPU has every ISA nncore builds")
    out = run_python("-c", "import nncore", NNCORE_ISA=missing[0])
    assert out.returncode != 0 and "not available" in out.stderr


def test_set_isa_rejects_unknown():
    with pytest.raises(ValueError, match="unknown ISA"):
        _core.set_isa("mmx")


def test_set_num_threads(num_threads):
    nncore.set_num_threads(1)
    assert nncore.get_num_threads() == 1
    nncore.set_num_threads(2)
    assert nncore.get_num_threads() == 2
    with pytest.raises(ValueError, match=r"in \[1, 1024\], got 0"):
        nncore.set_num_threads(0)
    with pytest.raises(ValueError, match="got 1000000"):
        nncore.set_num_threads(10**6)    # libgomp would exit the process
    with pytest.raises(TypeError):
        nncore.set_num_threads(1.5)


def test_omp_num_threads_env():
    out = run_python("-c", "import nncore; print(nncore.get_num_threads())", OMP_NUM_THREADS="1")
    assert out.stdout.strip() == "1", out.stderr


def test_threadpoolctl_controls_nncore(num_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    nncore.set_num_threads(2)
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert nncore.get_num_threads() == 1
    assert nncore.get_num_threads() == 2
    apis = {lib["internal_api"] for lib in threadpoolctl.threadpool_info()}
    assert "openmp" in apis


def test_cli_info():
    out = run_python("-m", "nncore", "info")
    assert out.returncode == 0, out.stderr
    assert "isa" in out.stdout and nncore.__version__ in out.stdout


SIZES = [0, 1, 2, 5, 7, 16, 17, 63, 64, 65, 257, 1000, 70001]


@pytest.mark.parametrize("n", SIZES)
def test_relu_forward_backward(isa, n, rng):
    x = rng.standard_normal(n).astype(np.float32)
    x[::7] = 0.0
    dy = rng.standard_normal(n).astype(np.float32)
    y = np.full(n, np.nan, np.float32)
    dx = np.full(n, np.nan, np.float32)
    _core.relu_forward(x, y)
    _core.relu_backward(x, dy, dx)
    np.testing.assert_array_equal(y, np.maximum(x.astype(np.float64), 0.0))
    np.testing.assert_array_equal(dx, np.where(x > 0, dy.astype(np.float64), 0.0))


def test_relu_in_place_and_nan(isa):
    x = np.array([-1.0, np.nan, 2.0, -np.inf, np.inf], np.float32)
    _core.relu_forward(x, x)
    np.testing.assert_array_equal(x, [0.0, np.nan, 2.0, 0.0, np.inf])


def test_relu_threads_bitwise_equal(isa, num_threads, rng):
    x = rng.standard_normal(300_001).astype(np.float32)
    out = []
    for threads in (1, 2):
        nncore.set_num_threads(threads)
        y = np.empty_like(x)
        _core.relu_forward(x, y)
        out.append(y)
    assert out[0].tobytes() == out[1].tobytes()


def test_relu_shape_mismatch():
    with pytest.raises(ValueError, match="elements"):
        _core.relu_forward(np.zeros(3, np.float32), np.zeros(4, np.float32))
