"""python -m nncore bench gemm|train --precision bf16 (tiny shapes): the bf16
side beside nncore float32, NumPy and PyTorch (float32 and autocast bf16),
the bf16 peak probe, and the reports' columns."""
import json

import pytest

import nncore
from nncore import _core, bench
from nncore.__main__ import main


def _run(tmp_path, argv):
    path = tmp_path / "out.json"
    assert main(argv + ["--tiny", "--quick", "--threads", "1", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def _check_rows(rows, family, sides):
    for r in rows:
        assert r["family"] == family and r["precision"] == "bf16"
        assert set(sides) <= set(r["contenders"])
        for side in r["contenders"]:
            assert r[f"{side}_rate"] > 0
            if side != "nncore":
                assert r[f"ratio_{side}"] == pytest.approx(r[f"{side}_s"] / r["nncore_s"])


def test_bf16_peak_probe(num_threads):
    nncore.set_num_threads(1)
    flops = _core.bf16_peak(1000)
    if nncore.info()["bf16"]:
        assert flops == 64.0 * 12 * 1000      # 12 chains of 16 lanes x 2 multiply-adds
        assert bench.bf16_peak_gflops(1, quick=True) > 0
    else:
        assert flops == 0.0 and bench.bf16_peak_gflops(1, quick=True) is None
    with pytest.raises(ValueError, match="iters must be >= 1"):
        _core.bf16_peak(0)


def test_bench_gemm_bf16(tmp_path, capsys):
    out = _run(tmp_path, ["bench", "gemm", "--precision", "bf16", "--peers", "numpy"])
    rows = out["families"]["gemm"]
    _check_rows(rows, "gemm", ("nncore", "nncore_f32", "numpy"))
    peak = out["environment"]["bf16_peak_gflops"]
    if nncore.info()["bf16"]:
        assert peak > 0
        for r in rows:
            assert r["limit_name"] == "bf16 peak" and r["limit"] == peak
            assert r["nncore_pct"] == pytest.approx(100 * r["nncore_rate"] / peak)
    else:
        assert peak is None and all(r.get("nncore_pct") is None for r in rows)
    text = capsys.readouterr().out
    assert "bf16 peak (vdpbf16ps)" in text and "x nncore_f32" in text
    md = bench.format_markdown(rows)
    assert md.startswith("| case | nncore bf16 | nncore float32 | NumPy")


def test_bench_train_bf16(tmp_path):
    torch = pytest.importorskip("torch")    # noqa: F841
    out = _run(tmp_path, ["bench", "train", "--precision", "bf16", "--peers", "numpy,torch"])
    rows = out["families"]["train"]
    _check_rows(rows, "train", ("nncore", "nncore_f32", "numpy", "torch", "torch_bf16"))
    assert bench.format_markdown(rows).startswith(
        "| case | nncore bf16 | nncore float32 | NumPy | PyTorch float32 | "
        "PyTorch autocast bf16 |")


def test_bench_train_contenders_run_and_precision_is_checked():
    from nncore.bench.mlp import _data
    X, y = _data(64, (16, 8, 4))
    for name, precision in (("nncore", "bf16"), ("nncore_f32", "bf16"), ("nncore", "float32")):
        run = bench.train_contender(name, (16, 8, 4), 16, precision)
        run(X, y)        # an epoch runs
    for name in ("nncore", "nncore_f32"):
        assert bench.train_contender(name, (16, 8, 4), 16, "bf16").__closure__[0] \
            .cell_contents.precision == ("bf16" if name == "nncore" else "float32")
    with pytest.raises(ValueError, match="precision must be one of"):
        bench.bench_train(tiny=True, peers=[], precision="fp16")


def test_bf16_only_for_gemm_and_train(capsys):
    assert main(["bench", "layers", "--precision", "bf16", "--tiny"]) == 2
    assert "for the families gemm and train" in capsys.readouterr().err
