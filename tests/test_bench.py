"""python -m nncore bench: every family runs (tiny shapes, --quick) and writes
the documented JSON; the row arithmetic and the report."""
import json
import os
import sys

import numpy as np
import pytest

import nncore
from nncore import _core, bench
from nncore.__main__ import main

ENV_FIELDS = ("cpu", "cores", "isa", "isa_available", "threads", "versions",
              "peak_gflops", "memory_bandwidth_gbs", "core_to_core_ns", "blas", "load_average",
              "date")
ROW_FIELDS = ("family", "group", "case", "threads", "isa", "contenders", "metric", "noisy",
              "repeats", "nncore_s", "nncore_min_s", "nncore_max_s", "nncore_spread")
# every family but conv (NumPy has no conv), and every row but the estimator rows of train
NUMPY_FIELDS = ("numpy_s", "ratio_numpy", "ratio")


def _has_numpy_side(r):
    return r["family"] != "conv" and r["group"] != bench.estimators.GROUP


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "all.json"
    assert main(["bench", "all", "--quick", "--tiny", "--threads", "1",
                 "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_environment_is_recorded(results):
    env = results["environment"]
    for key in ENV_FIELDS:
        assert key in env, key
    assert env["threads"] == 1
    assert env["versions"]["nncore"] and env["versions"]["numpy"]
    if env["blas"] is not None:       # threadpoolctl is installed
        assert env["blas"]["internal_api"] in env["versions"]
    for mod, name in (("torch", "torch"), ("sklearn", "scikit-learn"),
                      ("onnxruntime", "onnxruntime")):
        assert (name in env["versions"]) == (mod in sys.modules)
    assert env["peak_gflops"] > 0 and env["memory_bandwidth_gbs"] > 0
    assert env["core_to_core_ns"] is None           # one thread: no second core
    assert results["quick"] is True
    assert results["command"].startswith("python -m nncore bench all --quick")


def test_core_to_core_probe(num_threads):
    nncore.set_num_threads(1)
    assert _core.core_to_core_ns() == 0.0
    assert bench.core_to_core_ns(1) is None
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        _core.core_to_core_ns(0)
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: two threads would take turns")
    ns = bench.core_to_core_ns(2)
    # a cache line between two cores: tens to hundreds of ns, never free
    assert 1.0 < ns < 100_000.0
    assert nncore.get_num_threads() == 1                # the probe restores the count


@pytest.mark.parametrize("family", bench.ORDER)
def test_every_family_writes_its_rows(results, family):
    rows = results["families"][family]
    assert rows and all(r["family"] == family for r in rows)
    assert [r for r in results["rows"] if r["family"] == family] == rows
    for r in rows:
        for key in ROW_FIELDS + (NUMPY_FIELDS if _has_numpy_side(r) else ()):
            assert key in r, (family, key)
        for side in r["contenders"]:
            assert r[f"{side}_min_s"] <= r[f"{side}_s"] <= r[f"{side}_max_s"]
            assert r["repeats"][side] >= 2
            assert r[f"{side}_rate"] > 0
            if side != "nncore":
                assert r[f"ratio_{side}"] == pytest.approx(r[f"{side}_s"] / r["nncore_s"])
        if _has_numpy_side(r):
            assert r["ratio"] == r["ratio_numpy"]
        assert isinstance(r["noisy"], bool)
        assert r["noisy"] == any(r[f"{s}_spread"] > bench.SPREAD_LIMIT for s in r["contenders"])
        if r["group"] != bench.estimators.GROUP:
            assert ("torch" in r["contenders"]) == ("torch" in sys.modules)


def test_gemm_rows_report_percent_of_peak(results):
    peak = results["environment"]["peak_gflops"]
    for r in results["families"]["gemm"]:
        assert r["limit"] == peak and r["metric"] == "GFLOP/s"
        flop = 2.0 * r["m"] * r["n"] * r["k"]
        assert r["nncore_gflops"] == pytest.approx(flop / r["nncore_s"] / 1e9)
        assert r["nncore_pct"] == pytest.approx(100 * r["nncore_gflops"] / peak)
    assert {r["op"] for r in results["families"]["gemm"]} >= {"NN", "TT"}


def test_layer_rows_report_bandwidth(results):
    rows = results["families"]["layers"]
    groups = {r["group"] for r in rows}
    assert groups == {"dense", "activation", "loss", "optimizer"}
    bw = results["environment"]["memory_bandwidth_gbs"]
    for r in rows:
        if r["group"] == "dense":
            assert r["metric"] == "GFLOP/s"
        else:
            assert r["metric"] == "GB/s" and r["limit"] == bw
            assert r["nncore_rate"] == pytest.approx(r["work"] / r["nncore_s"] / 1e9)


def test_train_and_infer_rows_are_per_sample(results):
    for r in results["families"]["train"]:
        assert r["metric"] == "samples/s"
        for side in r["contenders"]:   # seconds per sample, each on its own data size
            assert r[f"{side}_rate"] == pytest.approx(1.0 / r[f"{side}_s"])
            if r["group"] != bench.estimators.GROUP:
                assert r["samples"][side] >= 2 * r["batch"]
        if "sklearn" in sys.modules:
            assert "sklearn" in r["contenders"]
    infer = results["families"]["infer"]
    assert [r["group"] for r in infer] == ["latency", "throughput"]
    for r in infer:
        assert r["nncore_rate"] == pytest.approx(r["batch"] / r["nncore_s"])


def test_estimator_rows(results):
    """NNClassifier against MLPClassifier: one row per solver, whole fits of
    the same number of iterations on the same data (sgd and adam at the
    batch size, lbfgs full batch); the rate is samples x iterations / s."""
    rows = [r for r in results["families"]["train"] if r["group"] == bench.estimators.GROUP]
    assert [r["solver"] for r in rows] == list(bench.estimators.SOLVERS)
    sides = ["nncore"] + (["sklearn"] if "sklearn" in sys.modules else [])
    for r in rows:
        assert r["contenders"] == sides
        for side in sides:
            assert r["n_iter"][side] == r["max_iter"]     # tol=0: nothing stops a fit early
            per_call = r["n_iter"][side] * r["samples"][side]
            assert r["fit_s"][side] == pytest.approx(r[f"{side}_s"] * per_call)
        assert r["batch"] == (r["samples"]["nncore"] if r["solver"] == "lbfgs" else 16)
    text = bench.format_table(results["families"]["train"])
    assert f"geomean train/{bench.estimators.GROUP} (3 rows)" in text


def test_estimator_params_are_scikit_learns_defaults():
    sklearn_nn = pytest.importorskip("sklearn.neural_network")
    params = bench.estimators.estimator_params("sgd", (784, 256, 128, 10), 200, 2)
    ours = sklearn_nn.MLPClassifier(**params).get_params()
    defaults = sklearn_nn.MLPClassifier().get_params()
    changed = {k for k in defaults if ours[k] != defaults[k]}
    assert changed == {"hidden_layer_sizes", "solver", "batch_size", "max_iter", "tol",
                       "n_iter_no_change", "random_state"}
    assert ours["momentum"] == 0.9 and ours["nesterovs_momentum"] and ours["alpha"] == 1e-4


def _onnxruntime_usable():
    return all(m in sys.modules for m in ("onnxruntime", "onnx", "torch"))


def test_conv_rows(results):
    """The conv family (tiny: 8x8 images, the small CNN and ResNet-8 of width
    4): training and predict rows for both nets, forward and backward rows for
    every layer shape, GFLOP/s and % of the FMA peak on every row, PyTorch
    and onnxruntime columns exactly when they import."""
    rows = results["families"]["conv"]
    peak = results["environment"]["peak_gflops"]
    groups = [r["group"] for r in rows]
    assert groups == ["train", "latency", "throughput"] * 2 + ["forward", "backward"] * 2
    assert {r["net"] for r in rows if "net" in r} == {"cnn", "resnet20"}
    for r in rows:
        assert "numpy_s" not in r and "sklearn_s" not in r
        assert r["limit"] == peak and r["limit_name"] == "FMA peak"
        assert r["nncore_pct"] > 0
        if r["group"] in ("forward", "backward"):
            assert r["metric"] == "GFLOP/s"
            assert r["nncore_rate"] == pytest.approx(r["work"] / r["nncore_s"] / 1e9)
            assert r["nncore_pct"] == pytest.approx(100 * r["nncore_rate"] / peak)
            assert "onnxruntime" not in r["contenders"]
        else:
            assert r["metric"] == "samples/s"
            assert r["nncore_gflops"] == pytest.approx(r["flops_per_sample"] * r["nncore_rate"]
                                                       / 1e9)
            assert r["nncore_pct"] == pytest.approx(100 * r["nncore_gflops"] / peak)
        if r["group"] == "train":
            assert "onnxruntime" not in r["contenders"]
            assert all(n >= 2 * r["batch"] for n in r["samples"].values())
        elif r["group"] in ("latency", "throughput"):
            assert ("onnxruntime" in r["contenders"]) == _onnxruntime_usable()
            assert r["max_abs_diff_nncore_predict"] == 0.0    # frozen: the same bits
            # one image on two threads: the core-to-core latency it ran with
            assert ("core_to_core_ns" in r) == (r["group"] == "latency" and r["threads"] > 1)
            for side in r["contenders"]:
                if side != "nncore":      # the peers' copies compute the same function
                    assert r[f"max_abs_diff_{side}"] < 1e-4, side
    assert [r["batch"] for r in rows if r["group"] == "latency"] == [1, 1]
    backward = [r for r in rows if r["group"] == "backward"]
    forward = [r for r in rows if r["group"] == "forward"]
    for f, b in zip(forward, backward):     # dx and dw: twice the forward's FLOPs
        assert b["work"] == 2 * f["work"]
    text = bench.format_table(rows)
    assert "geomean conv/forward (2 rows)" in text and "geomean conv/backward" in text


def test_conv_without_peers():
    """Without PyTorch (here: no peers asked for) the conv rows are nncore's alone."""
    rows = bench.run("conv", tiny=True, threads=1, peers=[], nets=["cnn"],
                     layers=bench.conv.LAYERS_TINY[:1])
    assert [r["group"] for r in rows] == ["train", "latency", "throughput", "forward",
                                          "backward"]
    for r in rows:      # predict: the frozen model and the model itself
        predict = r["group"] in ("latency", "throughput")
        assert r["contenders"] == ["nncore"] + ["nncore_predict"] * predict
    assert "x torch" not in bench.format_table(rows)


def test_conv_flops_and_torch_copy():
    from nncore import models
    cnn = models.small_cnn()
    # conv1 28x28x32 x 9, conv2 14x14x64 x 32*9, dense 3136*128, 128*10
    expected = [2 * 28 * 28 * 32 * 9, 2 * 14 * 14 * 64 * 32 * 9, 2 * 3136 * 128, 2 * 128 * 10]
    assert bench.layer_flops(cnn, (1, 28, 28)) == pytest.approx(expected)
    forward, train = bench.net_flops(cnn, (1, 28, 28))
    assert forward == pytest.approx(sum(expected))
    assert train == pytest.approx(3 * sum(expected) - expected[0])
    r20 = bench.layer_flops(models.resnet(20), (1, 28, 28))
    assert len(r20) == 19 + 2 + 1        # 19 3x3 convs, 2 projections, the classifier
    torch = pytest.importorskip("torch")
    import numpy as np
    net = bench.build_net("resnet20", 8, tiny=True)
    X = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    with torch.inference_mode():
        out = bench.torch_copy(net).eval()(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, net.predict(X), rtol=1e-4, atol=1e-5)


def test_summarize_ratios_and_noise():
    times = {"nncore": [1.0, 1.0, 1.0, 1.0], "numpy": [2.0, 2.0, 2.0, 2.0],
             "torch": [1.0, 2.0, 4.0, 8.0]}
    row = bench.summarize("x", "g", "c", times, 1, work=10.0, metric="GFLOP/s", limit=20.0,
                          limit_name="peak")
    assert row["ratio_numpy"] == 2.0 and row["ratio"] == 2.0
    assert row["torch_s"] == 3.0 and row["torch_min_s"] == 1.0 and row["torch_max_s"] == 8.0
    assert row["nncore_rate"] == 10.0 and row["nncore_pct"] == 50.0
    assert row["noisy"] and row["torch_spread"] > bench.SPREAD_LIMIT
    assert row["nncore_spread"] == 0.0
    per = bench.summarize("x", "g", "c", {"nncore": [2.0, 2.0], "numpy": [8.0, 8.0]}, 1,
                          work=1, metric="samples/s", per_call={"nncore": 4, "numpy": 2})
    assert per["nncore_s"] == 0.5 and per["numpy_s"] == 4.0 and per["ratio_numpy"] == 8.0
    text = bench.format_table([row])
    assert "~" in text and "wide spread" in text and "x numpy" in text


def test_markdown_tables(results, tmp_path):
    rows = results["families"]["train"]
    text = bench.format_markdown(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| case | nncore | NumPy")
    assert len(lines) == 2 + len(rows)
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    path = tmp_path / "t.md"
    assert main(["bench", "infer", "--quick", "--tiny", "--peers", "numpy",
                 "--markdown", str(path)]) == 0
    md = path.read_text()
    assert md.startswith("**infer**") and "| x NumPy |" in md


def test_time_many_takes_turns():
    order = []
    fns = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    times = bench.time_many(fns, budget=0.0, rounds=3, gap=0.0)
    assert {k: len(v) for k, v in times.items()} == {"a": 6, "b": 6, "c": 6}
    firsts = [order[6 + i * 9] for i in range(3)]   # after 2 warm-up calls each
    assert firsts == ["a", "b", "c"]


def test_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "ratios.png"
    assert main(["bench", "gemm", "--quick", "--tiny", "--peers", "numpy",
                 "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["bench", "gemm", "--tiny", "--plot", str(tmp_path / "x.png")]) == 2
    assert "pip install 'nncore[plot]'" in capsys.readouterr().err
    with pytest.raises(ImportError, match="nncore\\[plot\\]"):
        bench.plot({"gemm": []}, tmp_path / "x.png")


def test_unknown_family():
    with pytest.raises(SystemExit):
        main(["bench", "nope"])


def test_infer_times_the_frozen_model_and_the_model_itself():
    """bench infer's nncore side is the frozen model, nncore_predict the
    model's own predict: both give model.predict's bits."""
    model = bench._nncore_mlp((16, 8, 4))
    X = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    for side in ("nncore", "nncore_predict"):
        got = bench.infer_contender(side, (16, 8, 4), model)(X)
        assert np.array_equal(got, model.predict(X))
    rows = bench.bench_infer(tiny=True, peers=["numpy"], threads=1)
    assert rows and all(row["nncore_s"] > 0 and row["nncore_predict_s"] > 0 for row in rows)


def test_infer_with_onnxruntime():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    rows = bench.bench_infer(tiny=True, peers=["numpy", "onnxruntime"], threads=1)
    assert rows and all("ratio_onnxruntime" in row for row in rows)
    model = bench._nncore_mlp((16, 8, 4))
    X = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    got = bench.infer_contender("onnxruntime", (16, 8, 4), model)(X)
    np.testing.assert_allclose(got, model.predict(X), rtol=0,
                               atol=1e-5 * np.abs(model.predict(X)).max())
    assert "onnxruntime" in bench.format_table(rows)
