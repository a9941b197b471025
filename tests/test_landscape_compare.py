"""python -m nncore landscape --compare-skip: two tiny ResNets on the built-in
digits (8x8 images), trained with one recipe or loaded, their surfaces and
curvature maps saved and drawn; --replot redraws a saved result as it was."""
import numpy as np
import pytest

import nncore as nn
from nncore import landscape as ls
from nncore.__main__ import main

PNG = b"\x89PNG\r\n\x1a\n"

QUICK = ["landscape", "--compare-skip", "--data", "digits", "--depth", "8", "--width", "4",
         "--steps", "3", "--epochs", "1", "--train-samples", "128", "--samples", "64",
         "--curvature-steps", "2", "--curvature-samples", "16", "--lanczos-iters", "2",
         "--threads", "1"]


def test_compare_skip_quick_run_then_replot(tmp_path, capsys, num_threads):
    pytest.importorskip("matplotlib")
    result, out = tmp_path / "r.npz", tmp_path / "r.png"
    assert main(QUICK + ["--result", str(result), "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "ResNet-8: test accuracy" in text.out and "ResNet-8 without skips" in text.out
    assert "midpoint-convexity violations" in text.out and "points/s" in text.out
    assert "ETA" in text.err and "9/9 points" in text.err and "4/4 points" in text.err
    assert out.read_bytes().startswith(PNG)
    assert (tmp_path / "r-skip.nnc").exists() and (tmp_path / "r-noskip.nnc").exists()
    first, meta = ls.load_landscapes(result)
    assert list(first) == ["ResNet-8", "ResNet-8 without skips"]
    assert meta["recipe"]["epochs"] == 1 and meta["samples"] == 64
    for land in first.values():
        assert land.losses.shape == (3, 3) and np.isfinite(land.losses).all()
        assert land.curvature.ratio.shape == (2, 2)
        assert 0 <= land.stats["accuracy"] <= 1 and land.stats["points_per_second"] > 0
    # the saved skip net is the one whose landscape was drawn: its centre loss
    X, y = nn.datasets.load_digits(flatten=False)
    (X, _, y, _) = nn.datasets.train_test_split(X, y, test_size=0.25, seed=0, stratify=True)
    model = nn.load(tmp_path / "r-skip.nnc")
    centre = nn.CrossEntropyLoss().forward(model.predict(X[:64]), y[:64])
    assert first["ResNet-8"].losses[1, 1] == pytest.approx(centre, rel=1e-6)

    # --replot draws the same arrays again without computing, and leaves the file alone
    before = result.read_bytes()
    again = tmp_path / "again.png"
    assert main(["landscape", "--replot", str(result), "--out", str(again)]) == 0
    assert again.read_bytes().startswith(PNG) and result.read_bytes() == before
    assert "midpoint-convexity violations" in capsys.readouterr().out
    second, meta2 = ls.load_landscapes(result)
    assert meta2 == meta
    for name in first:
        assert np.array_equal(first[name].losses, second[name].losses)
        assert np.array_equal(first[name].curvature.lambda_min,
                              second[name].curvature.lambda_min)


def test_compare_skip_with_given_models_and_bad_arguments(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    paths = []
    for skip in (True, False):
        nn.manual_seed(0)
        paths.append(str(tmp_path / f"{skip}.nnc"))
        nn.save(nn.models.resnet(8, skip=skip, width=4), paths[-1])
    result = tmp_path / "m.npz"
    assert main(["landscape", "--compare-skip", "--models", *paths, "--data", "digits",
                 "--steps", "2", "--samples", "32", "--curvature-steps", "0",
                 "--result", str(result), "--out", str(tmp_path / "m.svg")]) == 0
    lands, meta = ls.load_landscapes(result)
    assert meta["recipe"] is None and all(land.curvature is None for land in lands.values())
    assert "True.nnc (with skips)" in lands
    capsys.readouterr()
    for argv, message in [
            (["--compare-skip", "--depth", "9"], "6n + 2"),
            (["--compare-skip", "--result", "x.json"], ".npz"),
            (["--compare-skip", "--models", "nope.nnc", "nope2.nnc"], "no such file"),
            (["--replot", "r.npz", "--compare-skip"], "one of them"),
            ([], "one of them")]:
        assert main(["landscape", *argv]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert main(["landscape", "--replot", str(tmp_path / "junk.npz"),
                 "--out", str(tmp_path / "j.png")]) == 1
    assert "not a landscape result" in capsys.readouterr().err
