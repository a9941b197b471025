"""Resources: fit allocates in proportion to the batch (no hidden copy of the
data), references to the data are dropped after fit, and memory stays flat
over long runs (100k predict calls, 10k training steps, short-lived threads)."""
import os
import threading
import tracemalloc

import numpy as np
import pytest

import nncore as nn

F32 = np.float32
ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def traced(fn):
    """(result, peak bytes above the start, bytes still held at the end) of fn()."""
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = fn()
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - base, end - base


def classification_data(n=20000, d=512, classes=10, dtype=F32):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, classes, n)


def mlp(d=512, out=10, seed=0):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Dense(d, 64), nn.ReLU(), nn.Dense(64, out))


@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_allocates_far_less_than_the_data(shuffle):
    """float32 C-contiguous input: no copy of X. What fit allocates is a few
    bytes per sample (permutation, targets in epoch order, metric buffers)
    plus buffers the size of a batch or a ~256 KiB chunk."""
    X, y = classification_data()                         # 39 MiB of float32
    Xv, yv = classification_data(4000)
    trainer = nn.Trainer(mlp(), nn.CrossEntropyLoss(), nn.Adam(1e-3), batch_size=64,
                         shuffle=shuffle, seed=0)
    _, peak, held = traced(lambda: trainer.fit(X, y, 2, validation_data=(Xv, yv), verbose=0))
    per_sample = 8 * 3 * len(X)        # int64 labels, permutation, labels in epoch order
    # the rest: the optimizer's state, buffers for a batch or a chunk
    assert peak < per_sample + (2 << 20), (peak, X.nbytes)
    assert peak < X.nbytes / 10
    assert held < 2 << 20, held


def test_fit_converts_once_and_keeps_no_copy():
    """float64 input: exactly one float32 copy during fit (documented), and
    no reference to it (or to the converted validation data) afterwards."""
    X, y = classification_data(dtype=np.float64)        # 78 MiB; its float32 copy: 39 MiB
    Xv, yv = classification_data(8000, dtype=np.float64)
    copies = X.nbytes // 2 + Xv.nbytes // 2
    trainer = nn.Trainer(mlp(), nn.CrossEntropyLoss(), nn.SGD(0.01), batch_size=128,
                         shuffle=False, seed=0)
    _, peak, held = traced(lambda: trainer.fit(X, y, 1, validation_data=(Xv, yv), verbose=0))
    assert copies < peak < copies + (3 << 20), (peak, copies)
    assert held < 2 << 20, held                          # the copies are gone

    _, peak, held = traced(lambda: trainer.evaluate(Xv, yv))
    assert held < 1 << 20, held


def test_regression_metrics_stay_batch_sized():
    """Wide regression outputs with mae/mse metrics: the metrics reduce as they
    go instead of holding every output of the epoch (20 MiB here)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((20000, 256)).astype(F32)
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(256, 32), nn.Tanh(), nn.Dense(32, 256))
    trainer = nn.Trainer(model, nn.MSELoss(), nn.SGD(0.01), batch_size=100, seed=0,
                         metrics=["mae", "mse"])
    history, peak, _ = traced(lambda: trainer.fit(X, X, 1, verbose=0))
    assert peak < X.nbytes / 10, peak
    assert history["mse"][0] == pytest.approx(history["loss"][0], rel=1e-3)


def test_regression_metrics_match_numpy_for_any_batch_and_chunk(monkeypatch):
    from nncore import metrics
    rng = np.random.default_rng(2)
    X = rng.standard_normal((103, 5)).astype(F32)
    Y = rng.standard_normal((103, 3)).astype(F32)
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(5, 3))
    trainer = nn.Trainer(model, nn.MSELoss(), nn.SGD(0.0), metrics=["mae", "mse"], seed=0,
                         shuffle=False)
    pred = model.predict(X).astype(np.float64)
    for chunk in (1, 7, 40, 1 << 14):
        monkeypatch.setattr(metrics._ErrorMetric, "CHUNK_VALUES", chunk)
        for batch in (1, 10, 103):
            trainer.batch_size = batch
            result = trainer.evaluate(X, Y)
            assert result["mae"] == pytest.approx(np.abs(pred - Y).mean(), rel=1e-6)
            assert result["mse"] == pytest.approx(((pred - Y) ** 2).mean(), rel=1e-6)


# ---- long runs: RSS stays flat ----

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def growth(fn, repeat, bound=4 << 20):
    """RSS growth over `repeat` calls of fn, after a warm-up of repeat // 10.
    Growth past `bound` is measured once more and the second figure kept: a
    leak grows again, while the allocator's one-off growth (its heap shaped
    by the tests that ran before in the same process) does not."""
    for _ in range(max(1, repeat // 10)):
        fn()
    for _ in range(2):
        before = rss()
        for _ in range(repeat):
            fn()
        grown = rss() - before
        if grown < bound:
            break
    return grown


MiB = 1 << 20


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
@pytest.mark.skipif(ASAN, reason="AddressSanitizer's quarantine holds freed memory")
def test_rss_flat_over_long_runs(capsys):
    """100k predict calls of batch 1, 10k training steps (through fit and by
    hand), 10k matmuls and 200 short-lived threads running kernels: RSS grows
    by less than 4 MiB each (a leak of 42 bytes per predict call, or 420 per
    training step, would exceed it)."""
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Dense(128, 10))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, 64)).astype(F32)
    y = rng.integers(0, 10, 1000)
    figures = {}

    rows = iter(range(10**9))
    figures["100k predict (batch 1)"] = growth(
        lambda: model.predict(X[next(rows) % 1000:][:1]), 100_000)

    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.Adam(1e-3), batch_size=10, seed=0)
    figures["10k steps in fit (10 fits)"] = growth(lambda: trainer.fit(X, y, 10, verbose=0), 10)

    loss, opt = nn.CrossEntropyLoss(), nn.SGD(0.01, momentum=0.9)
    model.train()
    batches = iter(range(10**9))

    def step():
        lo = next(batches) * 10 % 1000
        loss.forward(model.forward(X[lo:lo + 10]), y[lo:lo + 10])
        model.backward(loss.backward(), input_grad=False)
        opt.step(model.parameters())
    figures["10k steps by hand"] = growth(step, 10_000)

    a = rng.standard_normal((200, 300)).astype(F32)
    figures["10k matmul (packed)"] = growth(lambda: nn.matmul(a, a.T), 10_000)

    def short_lived_thread():
        t = threading.Thread(target=lambda: (nn.matmul(a, a.T), model.predict(X[:300])))
        t.start()
        t.join()
    figures["200 short-lived threads"] = growth(short_lived_thread, 200)

    with capsys.disabled():
        print("\nRSS growth: " + ", ".join(f"{k} {v / 1024:+.0f} KiB" for k, v in figures.items()))
    assert all(v < 4 * MiB for v in figures.values()), figures
