"""nncore.profile: C kernel events, per-layer spans, the table, JSON and the
Chrome trace; and the machine-limit kernels behind "% of peak"."""
import json
import threading
import time

import numpy as np
import pytest

import nncore as nn
from nncore import _core, losses, optim
from nncore.layers import sequential as layers  # where Sequential reads the profiler hook

LANES = {"generic": 4, "avx2": 8, "avx512": 16}
CHAINS = 12   # csrc/peak.c


def events_named(prof, name):
    names = _core.profile_kernel_names()
    return prof.events[[names[k] == name for k in prof.events["kernel"]]]


@pytest.mark.parametrize("trans_a,trans_b,name", [(False, False, "sgemm_nn"),
                                                  (False, True, "sgemm_nt"),
                                                  (True, False, "sgemm_tn"),
                                                  (True, True, "sgemm_tt")])
def test_gemm_flops_are_exact(rng, trans_a, trans_b, name):
    m, k, n = 37, 65, 17
    a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    with nn.profile(peak_gflops=100.0) as prof:
        nn.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
        nn.matmul(a[:1] if not trans_a else a[:, :1], b, trans_a=trans_a, trans_b=trans_b)
    ev = events_named(prof, name)
    assert len(ev) == len(prof.events) == 2
    assert list(ev["flops"]) == [2.0 * m * n * k, 2.0 * 1 * n * k]
    assert [tuple(e) for e in ev[["m", "n", "k"]]] == [(m, n, k), (1, n, k)]
    assert (ev["dur_ns"] >= 0).all()
    row = prof.summary()["kernels"][0]
    assert row["kernel"] == name and row["calls"] == 2
    assert row["flops"] == 2.0 * m * n * k + 2.0 * n * k
    assert row["gflops"] == pytest.approx(row["flops"] / row["total_s"] / 1e9)
    assert row["pct_peak"] == pytest.approx(row["gflops"])   # of 100 GFLOP/s


def test_dense_step_records_its_gemms_and_kernels(rng):
    x = rng.standard_normal((8, 5), dtype=np.float32)
    layer = nn.Dense(5, 3, activation="relu")
    with nn.profile(peak_gflops=1.0) as prof:
        y = layer.forward(x)
        layer.backward(np.ones_like(y))
    names = _core.profile_kernel_names()
    got = [(names[e["kernel"]], int(e["m"]), int(e["n"]), int(e["k"]), e["flops"])
           for e in prof.events]
    assert got == [("sgemm_nn", 8, 3, 5, 2.0 * 8 * 3 * 5),       # y = relu(x W + b)
                   ("relu_backward", 24, 0, 0, 0.0),
                   ("sgemm_tn", 5, 3, 8, 2.0 * 5 * 3 * 8),       # dW = x^T dy
                   ("bias_backward", 8, 3, 0, 0.0),
                   ("sgemm_nt", 8, 5, 3, 2.0 * 8 * 5 * 3)]       # dx = dy W^T
    starts = prof.events["start_ns"]
    assert (np.diff(starts) > 0).all()
    assert prof.start_ns <= starts[0] and starts[-1] <= prof.end_ns


def test_losses_and_every_isa_trampoline_record(isa, rng):
    x = rng.standard_normal((4, 6), dtype=np.float32)
    with nn.profile(peak_gflops=1.0) as prof:
        nn.Sigmoid().forward(x)
        nn.MSELoss().forward(x, np.zeros_like(x))
        nn.CrossEntropyLoss().forward(x, np.array([0, 1, 2, 5]))
    names = _core.profile_kernel_names()
    assert [names[k] for k in prof.events["kernel"]] == [
        "sigmoid_forward", "mse_forward", "mse_backward", "cross_entropy_forward"]
    assert list(prof.events["m"]) == [24, 24, 24, 4]
    assert prof.events["n"][-1] == 6


def test_nothing_is_recorded_outside_a_profile(rng):
    a = rng.standard_normal((4, 4), dtype=np.float32)
    nn.matmul(a, a)
    with nn.profile(peak_gflops=1.0) as prof:
        pass
    assert len(prof.events) == 0 and prof.dropped == 0
    nn.matmul(a, a)
    with nn.profile(peak_gflops=1.0) as prof:
        nn.matmul(a, a)
    assert len(prof.events) == 1
    assert not _core.profile_enabled()
    assert layers._PROFILE is None and losses._PROFILE is None and optim._PROFILE is None


def test_full_buffer_counts_drops(rng):
    a = rng.standard_normal((3, 3), dtype=np.float32)
    with nn.profile(max_events=2, peak_gflops=1.0) as prof:
        for _ in range(5):
            nn.matmul(a, a)
    assert len(prof.events) == 2 and prof.dropped == 3
    assert "not recorded" in prof.table()
    # The next profile starts empty.
    with nn.profile(max_events=10, peak_gflops=1.0) as prof:
        nn.matmul(a, a)
    assert len(prof.events) == 1 and prof.dropped == 0


def test_profiles_do_not_nest_and_errors_stop_profiling():
    with nn.profile(peak_gflops=1.0):
        with pytest.raises(RuntimeError, match="already profiling"):
            with nn.profile(peak_gflops=1.0):
                pass
    assert not _core.profile_enabled()
    with pytest.raises(ZeroDivisionError):
        with nn.profile(peak_gflops=1.0):
            1 / 0
    assert not _core.profile_enabled() and layers._PROFILE is None
    with pytest.raises(ValueError, match="max_events"):
        nn.profile(max_events=0)
    prof = nn.profile()
    with pytest.raises(RuntimeError, match="after the with block"):
        prof.summary()


def test_concurrent_callers_each_event_recorded_once(rng):
    a = rng.standard_normal((16, 16), dtype=np.float32)
    calls, nthreads = 200, 4

    def work():
        for _ in range(calls):
            nn.matmul(a, a)
    threads = [threading.Thread(target=work) for _ in range(nthreads)]
    with nn.profile(peak_gflops=1.0) as prof:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    ev = prof.events
    assert len(ev) == calls * nthreads and prof.dropped == 0
    assert (ev["flops"] == 2.0 * 16 ** 3).all()
    per_thread = np.unique(ev["thread"], return_counts=True)[1]
    assert list(per_thread) == [calls] * nthreads


def make_fit(n=1024, features=256, hidden=512, batch=64):
    rng = np.random.default_rng(0)
    X = rng.random((n, features), dtype=np.float32)
    y = rng.integers(0, 10, n)
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(features, hidden), nn.ReLU(), nn.Dense(hidden, 10))
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(lr=0.01, momentum=0.9),
                         batch_size=batch, seed=0)
    trainer.fit(X[:2 * batch], y[:2 * batch], 1, verbose=0)   # warm up buffers
    return trainer, X, y


def test_layer_times_add_up_to_the_fit(num_threads):
    # Big enough steps (~3 ms) that the training loop's own work between
    # them (shuffling, gathering rows, metrics) stays small: with 1,024
    # hidden units (1.5 ms steps on a Xeon VM) the spans covered 88-91% of
    # the fit, on the code of 2026-12-05 as on later code.
    # The machine may be shared: a fit whose loop is preempted between spans
    # is not the profiler's fault, so the best of three fits is checked.
    nn.set_num_threads(1)
    trainer, X, y = make_fit(hidden=2048, batch=128)
    best = None
    for _ in range(3):
        with nn.profile(peak_gflops=50.0) as prof:
            t0 = time.perf_counter()
            trainer.fit(X, y, 2, verbose=0)
            wall = time.perf_counter() - t0
        coverage = prof.summary()["spans_s"] / wall
        if best is None or coverage > best[0]:
            best = (coverage, prof, wall)
        if coverage >= 0.95:
            break
    _, prof, wall = best
    s = prof.summary()
    steps = 2 * len(X) // 128
    rows = {(r["name"], r["phase"]): r for r in s["layers"]}
    assert rows[("0 Dense(256, 2048)", "forward")]["calls"] == steps
    assert rows[("2 Dense(2048, 10)", "backward")]["calls"] == steps
    assert rows[("loss: CrossEntropyLoss", "forward")]["calls"] == steps
    assert rows[("optimizer: SGD", "step")]["calls"] == steps == s["steps"]
    # The first layer's input gradient is skipped in training: no NT GEMM for it.
    kernels = {r["kernel"]: r for r in s["kernels"]}
    assert kernels["sgemm_nn"]["calls"] == 2 * steps
    assert kernels["sgemm_tn"]["calls"] == 2 * steps
    assert kernels["sgemm_nt"]["calls"] == steps
    assert kernels["sgemm_nn"]["flops"] == steps * 2.0 * 128 * (256 * 2048 + 2048 * 10)
    # Layers + loss + optimizer cover the fit, and their parts add up.
    total = sum(r["total_s"] for r in s["layers"] if r["depth"] == 0)
    assert total == pytest.approx(s["spans_s"])
    assert 0.9 * wall <= total <= wall
    assert s["spans_s"] + s["outside_spans_s"] == pytest.approx(s["wall_s"])
    assert s["wall_s"] >= wall
    for r in s["layers"]:
        assert 0 <= r["kernel_s"] <= r["total_s"] * 1.0001
    assert s["kernel_s"] <= s["wall_s"]
    text = prof.table()
    for needle in ("0 Dense(256, 2048)", "optimizer: SGD", "sgemm_tn", "%peak",
                   "outside kernels"):
        assert needle in text


def test_nested_sequential_spans_are_named_by_path(rng):
    inner = nn.Sequential(nn.Dense(4, 4), nn.Tanh())
    model = nn.Sequential(nn.Dense(3, 4), inner, nn.Dense(4, 2))
    x = rng.standard_normal((5, 3), dtype=np.float32)
    with nn.profile(peak_gflops=1.0) as prof:
        model.backward(model.forward(x).copy())
    rows = {(r["name"], r["phase"]): r for r in prof.summary()["layers"]}
    assert rows[("1.1 Tanh()", "forward")]["depth"] == 1
    assert rows[("1.0 Dense(4, 4)", "backward")]["kernel_s"] > 0
    assert rows[("1 Sequential", "forward")]["depth"] == 0


def test_json_and_chrome_trace(tmp_path, num_threads):
    nn.set_num_threads(1)
    trainer, X, y = make_fit(n=256, features=16, hidden=8, batch=32)
    with nn.profile(peak_gflops=10.0) as prof:
        trainer.fit(X, y, 1, verbose=0)
    data = json.loads(prof.to_json(tmp_path / "p.json"))
    assert json.loads((tmp_path / "p.json").read_text()) == data
    for key in ("wall_s", "threads", "isa", "peak_gflops", "events", "dropped", "kernel_s",
                "outside_kernels_s", "layers", "kernels"):
        assert key in data
    path = prof.export_chrome_trace(tmp_path / "trace.json")
    trace = json.loads(open(path).read())
    events = trace["traceEvents"]
    assert isinstance(events, list)
    complete = [e for e in events if e["ph"] == "X"]
    assert len(complete) == len(prof.events) + len(prof.spans)
    for e in events:
        assert {"name", "ph", "pid", "tid"} <= set(e)
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
    for e in complete:
        assert isinstance(e["ts"], float) and isinstance(e["dur"], float) and e["dur"] >= 0
        assert e["cat"] in ("layer", "loss", "optimizer", "kernel")
    # Every kernel runs inside a span of the same thread (same clock).
    spans = [e for e in complete if e["cat"] != "kernel"]
    for k in (e for e in complete if e["cat"] == "kernel"):
        assert any(s["tid"] == k["tid"] and s["ts"] <= k["ts"] + 1e-3
                   and k["ts"] + k["dur"] <= s["ts"] + s["dur"] + 1e-3 for s in spans)
    assert any(e["name"] == "sgemm_nn" and e["args"]["flops"] > 0 for e in complete)


def test_profile_clock_is_perf_counter():
    a = time.perf_counter_ns()
    b = _core.profile_now_ns()
    c = time.perf_counter_ns()
    assert a <= b <= c


def test_fma_peak_counts_its_operations(isa, num_threads):
    for threads in (1, 2):
        nn.set_num_threads(threads)
        flops = _core.fma_peak(1000)
        assert flops == 2 * CHAINS * LANES[isa] * 1000 * threads
    with pytest.raises(ValueError):
        _core.fma_peak(0)


def test_triad(isa, rng):
    n = 100003
    b = rng.integers(-100, 100, n).astype(np.float32)
    c = rng.integers(-100, 100, n).astype(np.float32)
    a = np.empty(n, np.float32)
    _core.triad(a, b, c, 0.5)
    np.testing.assert_array_equal(a, b + np.float32(0.5) * c)   # exact for these values
    with pytest.raises(ValueError):
        _core.triad(a[:10], b, c, 1.0)
