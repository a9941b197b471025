"""python -m nncore demo / train: run in-process through the entry point, and
once as a real subprocess (what the README's quick start runs)."""
import os
import subprocess
import sys

import numpy as np

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
