"""python -m nncore demo / train: run in-process through the entry point, and
once as a real subprocess (what the README's quick start runs)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import nncore as nn
from nncore.__main__ import main


def test_demo_trains_reports_and_saves(tmp_path, capsys, num_threads):
    out = tmp_path / "demo.nnc"
    assert main(["demo", "--epochs", "5", "--out", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "epoch 5/5" in text
    accuracy = float(text.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.9
    assert "samples/s" in text and "predictions identical" in text
    model = nn.load(out)
    X, _ = nn.datasets.load_digits()
    assert model.predict(X).shape == (1797, 10)


def test_train_digits_with_options(tmp_path, capsys):
    out = tmp_path / "m.nnc"
    assert main(["train", "--data", "digits", "--hidden", "32,16", "--epochs", "3",
                 "--batch-size", "64", "--lr", "0.01", "--optimizer", "adam",
                 "--verbose", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "training 64-32-16-10" in text and "adam" in text
    assert [d.out_features for d in nn.load(out).layers if hasattr(d, "out_features")] \
        == [32, 16, 10]


def test_train_cnn_on_digit_images(tmp_path, capsys):
    """--model cnn: the digits as (N, 1, 8, 8) images into the small CNN sized
    for 8x8 (image_size=8); it learns, and the saved conv net reloads."""
    out = tmp_path / "cnn.nnc"
    assert main(["train", "--data", "digits", "--model", "cnn", "--epochs", "2",
                 "--batch-size", "32", "--threads", "1", "--verbose", "0",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "training small CNN (1x8x8 -> 10) on 1347 samples" in text
    assert float(text.split("test accuracy ")[1].split()[0]) > 0.8
    assert "predictions identical" in text
    model = nn.load(out)
    assert [type(layer).__name__ for layer in model.layers][:3] == ["Conv2d", "ReLU",
                                                                    "MaxPool2d"]
    X, _ = nn.datasets.load_digits(flatten=False)
    assert model.predict(X[:5]).shape == (5, 10)


def test_train_model_choices():
    from nncore.__main__ import _conv_model_for
    r20 = _conv_model_for("resnet20", (1, 28, 28), 10)
    assert r20.output_shape((1, 28, 28)) == (10,)
    assert sum(type(layer).__name__ == "Residual" for layer in r20.layers) == 9
    assert _conv_model_for("cnn", (1, 28, 28), 10).layers[7].in_features == 3136


def test_train_mlp_flags_are_for_the_mlp(capsys):
    assert main(["train", "--data", "digits", "--model", "cnn", "--hidden", "32",
                 "--out", ""]) == 2
    assert "--hidden and --activation are for --model mlp" in capsys.readouterr().err


def test_train_without_fashion_mnist_says_how_to_get_it(tmp_path, capsys):
    assert main(["train", "--path", str(tmp_path), "--epochs", "1", "--out", ""]) == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_demo_subprocess(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nncore", "demo", "--epochs", "2",
                             "--out", "d.nnc"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d.nnc").exists()
    assert np.isfinite(float(result.stdout.split("test accuracy ")[1].split()[0]))


def test_export_and_predict(tmp_path, capsys):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    nn.manual_seed(0)
    model = nn.models.small_cnn(image_size=8)
    nn.save(model, tmp_path / "m.nnc")
    X = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    assert main(["export", str(tmp_path / "m.nnc"), str(tmp_path / "m.onnx")]) == 1
    assert "pass input_shape" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "m.nnc"), str(tmp_path / "m.onnx"),
                 "--input-shape", "1,8,8"]) == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    expected = model.predict(X)
    scale = np.abs(expected).max()     # within 1e-5 of the outputs' scale
    np.testing.assert_allclose(session.run(None, {"input": X})[0], expected, rtol=0,
                               atol=1e-5 * scale)
    for name in ("m.onnx", "m.nnc"):
        out = tmp_path / f"{name}.npy"
        capsys.readouterr()
        assert main(["predict", str(tmp_path / name), "--input", str(tmp_path / "x.npy"),
                     "--output", str(out)]) == 0
        np.testing.assert_allclose(np.load(out), expected, rtol=1e-6, atol=1e-7)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "x.npy")]) == 0
    printed = np.loadtxt(capsys.readouterr().out.splitlines())
    np.testing.assert_allclose(printed, expected, rtol=1e-6, atol=1e-6)


def test_predict_reports_bad_files(tmp_path, capsys):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    nn.save(nn.Sequential(nn.Dense(3, 2)), tmp_path / "m.nnc")
    assert main(["predict", str(tmp_path / "bad.onnx"), "--input",
                 str(tmp_path / "x.npy")]) in (1, 2)
    assert "bad.onnx" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "m.nnc"), "--input", str(tmp_path / "obj.npy")]) == 1
    assert "pickle" in capsys.readouterr().err.lower()
    assert main(["predict", str(tmp_path / "m.nnc"), "--input", str(tmp_path / "m.nnc")]) == 1
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m.nnc"), "--input", str(tmp_path / "x.npy")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
