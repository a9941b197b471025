"""Threads: the kernels release the GIL; predict may be shared between threads;
forward/backward/fit on one model from two threads raise instead of
corrupting anything; kernels never use more OpenMP threads than asked, from
any Python thread."""
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import nncore as nn

F32 = np.float32


def big_model(seed=0):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Dense(256, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Dense(1024, 512),
                         nn.GELU(), nn.Dense(512, 10)).eval()


def progress_during(call):
    """How many iterations a pure-Python loop in another thread makes while
    `call` runs in this one (about zero if `call` holds the GIL)."""
    state = {"run": False, "stop": False, "count": 0}

    def spin():
        count = 0
        while not state["stop"]:
            if state["run"]:
                count += 1
        state["count"] = count

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.01)
    state["run"] = True
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    state["run"] = False
    state["stop"] = True
    t.join()
    return state["count"], seconds


def test_gil_probe_sees_a_call_that_holds_the_gil():
    # The probe may still get one switch interval (5 ms, ~2.5e5 iterations)
    # between setting its flag and the call taking the GIL: a call of over a
    # second keeps that below the bound however the threads are scheduled.
    count, seconds = progress_during(lambda: sum(range(100_000_000)))
    assert count / seconds < 5e5, (count, seconds)


@pytest.mark.parametrize("what", ["matmul", "predict", "train step"])
def test_kernels_release_the_gil(what, num_threads):
    nn.set_num_threads(1)          # leave a core to the spinning thread
    rng = np.random.default_rng(0)
    if what == "matmul":
        a = rng.standard_normal((1200, 1200)).astype(F32)
        calls = [lambda: nn.matmul(a, a)] * 3
    elif what == "predict":
        model, X = big_model(), rng.standard_normal((4000, 256)).astype(F32)
        calls = [lambda: model.predict(X)]
    else:
        model, X = big_model().train(), rng.standard_normal((2000, 256)).astype(F32)
        loss, opt, y = nn.CrossEntropyLoss(), nn.SGD(0.01), rng.integers(0, 10, 2000)

        def step():
            loss.forward(model.forward(X), y)
            model.backward(loss.backward(), input_grad=False)
            opt.step(model.parameters())
        calls = [step]

    def run():
        for call in calls:
            call()
    count, seconds = progress_during(run)
    # A C call holding the GIL lets the other thread in only now and then
    # (sum(range(...)) here: ~5e4 iterations/s); released, it spins freely
    # (~5e6/s on one free core).
    assert seconds > 0.02, "the call is too quick to tell"
    assert count / seconds > 5e5, (count, seconds)


def test_concurrent_predict_on_one_model_is_correct():
    """Four threads predict on one model (eval mode) at once, with different
    inputs and chunk sizes; each gets exactly the single-threaded result, and
    the calls really overlap in time."""
    model = big_model()
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((300 + 37 * i, 256)).astype(F32) for i in range(8)]
    want = [model.predict(x, batch_size=128) for x in inputs]
    start = threading.Barrier(4)
    spans = []

    def work(t):
        start.wait()
        bad = 0
        for r in range(4):
            for i in range(len(inputs)):
                j = (i + t) % len(inputs)
                t0 = time.perf_counter()
                got = model.predict(inputs[j], batch_size=128)
                spans.append((t0, time.perf_counter(), t))
                bad += not np.array_equal(got, want[j])
        return bad

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(work, range(4))) == [0, 0, 0, 0]
    spans.sort()
    overlaps = sum(1 for (s0, e0, t0), (s1, e1, t1) in zip(spans, spans[1:])
                   if s1 < e0 and t0 != t1)
    assert overlaps > 10, overlaps
    assert not model.training
    assert len(model._workspaces) <= 4          # one pooled workspace per concurrent call


def test_concurrent_one_chunk_predict_on_a_dense_chain():
    """The one-chunk path (one C chain call into a pooled workspace's plan)
    from four threads at once, one sample and small batches mixed: each
    call gets exactly the single-threaded result."""
    nn.manual_seed(3)
    model = nn.Sequential(nn.Dense(256, 512), nn.ReLU(), nn.Dense(512, 256, activation="relu"),
                          nn.Dense(256, 10)).eval()
    assert model._chain is not None
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((n, 256)).astype(F32) for n in (1, 1, 3, 40, 1, 17)]
    want = [model.predict(x) for x in inputs]
    start = threading.Barrier(4)

    def work(t):
        start.wait()
        bad = 0
        for r in range(50):
            j = (r + t) % len(inputs)
            bad += not np.array_equal(model.predict(inputs[j]), want[j])
        return bad

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(work, range(4))) == [0, 0, 0, 0]
    assert 1 <= len(model._chain_predictor.free) <= 4   # one plan per concurrent call


def test_concurrent_predict_proba_and_estimator_predict():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((400, 256)).astype(F32)
    model = big_model()
    want = model.predict_proba(X)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: model.predict_proba(X), range(12)))
    assert all(np.array_equal(r, want) for r in results)

    clf = nn.NNClassifier(hidden_layer_sizes=(64,), max_iter=3, random_state=0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, rng.integers(0, 3, 400))
    labels = clf.predict(X)
    with ThreadPoolExecutor(3) as pool:
        assert all(np.array_equal(r, labels) for r in pool.map(lambda _: clf.predict(X), range(9)))


class Gate(nn.Layer):
    """A layer whose forward waits until released: holds a model mid-forward."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, x):
        self.entered.set()
        assert self.release.wait(10)
        return x

    def backward(self, grad, input_grad=True):
        return grad


def test_second_thread_in_forward_or_backward_raises():
    nn.manual_seed(0)
    gate = Gate()
    model = nn.Sequential(nn.Dense(4, 3), gate, nn.Dense(3, 2))
    x = np.ones((5, 4), F32)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("y", model.forward(x).copy()))
    t.start()
    assert gate.entered.wait(10)
    with pytest.raises(RuntimeError, match="called from two threads at once"):
        model.forward(x)
    with pytest.raises(RuntimeError, match="called from two threads at once"):
        model.backward(np.ones((5, 2), F32))
    gate.release.set()
    t.join()
    np.testing.assert_array_equal(result["y"], model.predict(x))
    model.forward(x)                                   # free again
    model.backward(np.ones((5, 2), F32))


def test_misuse_from_threads_stays_memory_safe():
    """Two threads fitting one model while two others predict on it: every
    fit either completes or raises RuntimeError (a model trains in one thread
    at a time); every predict works; nothing crashes (run under
    AddressSanitizer to see memory errors), and the model ends finite and
    usable."""
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(32, 64), nn.ReLU(), nn.Dense(64, 4))
    rng = np.random.default_rng(3)
    X = rng.standard_normal((512, 32)).astype(F32)
    y = rng.integers(0, 4, 512)

    def train(_):
        trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(0.01), batch_size=16)
        outcomes = []
        for _ in range(5):
            try:
                trainer.fit(X, y, 1, verbose=0)
                outcomes.append("fit")
            except RuntimeError as exc:
                assert "thread" in str(exc)
                outcomes.append("refused")
        return outcomes

    def infer(_):
        for _ in range(30):
            assert model.predict(X[:100]).shape == (100, 4)
        return ["predict"] * 30

    for _ in range(3):
        with ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(f, i) for i, f in enumerate((train, train, infer, infer))]
            outcomes = sum((job.result() for job in jobs), [])   # re-raises any other error
        assert len(outcomes) == 70 and outcomes.count("predict") == 60
        assert all(np.isfinite(p).all() for p, _ in model.parameters())
    nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(0.01)).fit(X, y, 1, verbose=0)


def test_backward_in_another_thread_than_forward_raises():
    model = big_model().train()
    x = np.ones((3, 256), F32)
    t = threading.Thread(target=lambda: model.forward(x))
    t.start()
    t.join()
    with pytest.raises(RuntimeError, match="backward\\(\\) in another thread"):
        model.backward(np.ones((3, 10), F32))
    model.forward(x)
    model.backward(np.ones((3, 10), F32))


def test_copies_get_their_own_lock_and_workspaces():
    import copy
    import pickle
    model = big_model()
    model.predict(np.ones((3, 256), F32))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone._busy is not model._busy and clone._workspaces == []
        np.testing.assert_array_equal(clone.predict(np.ones((3, 256), F32)),
                                      model.predict(np.ones((3, 256), F32)))


# ---- thread counts -------------------------------------------------------

THREAD_COUNT_SCRIPT = textwrap.dedent("""
    import os, sys, threading
    import numpy as np
    import nncore as nn
    def tasks():
        return len(os.listdir("/proc/self/task"))
    mode, n = sys.argv[1], int(sys.argv[2])
    if mode == "set":
        nn.set_num_threads(n)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4096, 256)).astype(np.float32)
    y = rng.integers(0, 10, 4096)
    def work():
        nn.manual_seed(0)
        model = nn.Sequential(nn.Dense(256, 512), nn.ReLU(), nn.Dense(512, 10))
        nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(0.01), batch_size=512).fit(
            X, y, 1, verbose=0)
        model.predict(X)
        nn.matmul(X, X.T)
    where = sys.argv[3]
    before = tasks()
    if where == "main":
        work()
        print(tasks() - before, nn.get_num_threads())
    else:
        out = []
        t = threading.Thread(target=lambda: (work(), out.append(tasks() - before - 1)))
        t.start(); t.join()
        print(out[0], nn.get_num_threads())
""")


def extra_threads(mode, n, where):
    """How many threads the process gained running kernels (fit, predict,
    matmul), in the main thread or a new Python thread, after
    set_num_threads(n) ("set") or with OMP_NUM_THREADS=n ("env")."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env.pop("OMP_NUM_THREADS", None)
    if mode == "env":
        env["OMP_NUM_THREADS"] = str(n)
    out = subprocess.run([sys.executable, "-P", "-c", THREAD_COUNT_SCRIPT, mode, str(n), where],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    gained, reported = (int(v) for v in out.stdout.split())
    return gained, reported


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
@pytest.mark.parametrize("mode", ["set", "env"])
@pytest.mark.parametrize("where", ["main", "worker"])
def test_one_thread_means_one_thread(mode, where):
    """With set_num_threads(1) or OMP_NUM_THREADS=1, fit, predict and matmul
    start no thread at all -- also from a Python thread other than the one
    that set the count. Two threads (the control) do start one."""
    assert extra_threads(mode, 1, where) == (0, 1)
    if (os.cpu_count() or 1) >= 2:
        assert extra_threads(mode, 2, where) == (1, 2)
