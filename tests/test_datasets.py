"""nncore.datasets: IDX files, the built-in digits, Fashion-MNIST, splitting."""
import gzip
import os

import numpy as np
import pytest

import nncore
from nncore import datasets
from nncore.errors import FormatError

# The class distribution of UCI optdigits.tes, as the UCI page documents it.
DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


# ---------------------------------------------------------------- digits


def test_digits_shape_dtype_values():
    X, y = datasets.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    counts = X * 16
    assert np.array_equal(counts, np.round(counts))  # /16 is exact
    assert np.bincount(y).tolist() == DIGITS_CLASS_COUNTS
    assert nncore.datasets is datasets


def test_digits_options():
    X, y = datasets.load_digits()
    images, y2 = datasets.load_digits(flatten=False, normalize=False)
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.uint8 and images.max() == 16
    assert np.array_equal(images.reshape(1797, 64) / np.float32(16), X)
    assert np.array_equal(y, y2)
    assert datasets.load_digits(flatten=False)[0].shape == (1797, 1, 8, 8)


def test_digits_equal_scikit_learn():
    sk = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits()
    ref = sk.load_digits()
    assert np.array_equal(X.astype(np.float64) * 16, ref.data)
    assert np.array_equal(y, ref.target)


def test_digits_attribution_ships_with_the_data():
    readme = os.path.join(os.path.dirname(datasets.__file__), "data", "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    for needle in ("CC BY 4.0", "Alpaydin", "Kaynak", "10.24432/C50P49"):
        assert needle in text and needle in datasets.DIGITS_CITATION + " CC BY 4.0"


# ---------------------------------------------------------------- IDX


IDX_DTYPES = ["u1", "i1", ">i2", "<i2", "i4", "f4", ">f8"]


@pytest.mark.parametrize("dtype", IDX_DTYPES)
@pytest.mark.parametrize("shape", [(0,), (5,), (2, 3, 4), (1, 1, 1, 2)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, shape, suffix, rng):
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path / ("a.idx" + suffix)
    datasets.write_idx(path, arr)
    back = datasets.read_idx(path)
    assert back.shape == arr.shape and back.dtype == arr.dtype.newbyteorder("=")
    assert np.array_equal(back, arr)
    if suffix == "":  # the bytes are the documented layout
        code = {"u1": 8, "i1": 9, "i2": 11, "i4": 12, "f4": 13, "f8": 14}[dtype.strip("<>")]
        header = bytes([0, 0, code, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
        assert path.read_bytes() == header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    else:
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_idx_gzip_is_detected_from_content_not_name(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    datasets.write_idx(tmp_path / "a.gz", arr)
    os.rename(tmp_path / "a.gz", tmp_path / "plain-name")
    datasets.write_idx(tmp_path / "b", arr)
    os.rename(tmp_path / "b", tmp_path / "b.gz")
    for name in ("plain-name", "b.gz"):
        assert np.array_equal(datasets.read_idx(tmp_path / name), arr)


def test_write_idx_rejects_what_idx_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="int64"):
        datasets.write_idx(tmp_path / "x", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="shape"):
        datasets.write_idx(tmp_path / "x", np.uint8(3))


def small_idx(tmp_path, suffix):
    path = tmp_path / ("small" + suffix)
    datasets.write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    return path.read_bytes()


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_every_truncation_raises_format_error(tmp_path, suffix):
    data = small_idx(tmp_path, suffix)
    path = tmp_path / "cut"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(FormatError, match="cut"):
            datasets.read_idx(path)


def write(tmp_path, data, compress):
    path = tmp_path / "bad"
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("data, match", [
    (b"\x01\x00\x08\x01" + bytes(4), "not an IDX file"),
    (b"\x00\x00\x0a\x01" + bytes(4), "not an IDX file"),  # 0x0A is not a type code
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\xc8" + bytes(800), "200 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated in the header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03ab", "truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03abcd", "trailing bytes"),
    (b"\x00\x00\x0d\x01\x00\x00\x00\x02" + bytes(7), "truncated"),
    (b"\x00\x00\x08\x03" + b"\xff" * 12 + bytes(100), "truncated"),  # 2**96 bytes claimed
    (b"\x00\x00\x0e\x03" + b"\xff" * 12, "truncated"),
])
def test_idx_bad_headers(tmp_path, data, compress, match):
    with pytest.raises(FormatError, match=match):
        datasets.read_idx(write(tmp_path, data, compress))


def test_idx_corrupt_gzip(tmp_path):
    good = bytearray(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x01\x00" + bytes(range(256))))
    good[-8] ^= 0xFF  # the CRC32 of the content
    (tmp_path / "crc").write_bytes(bytes(good))
    with pytest.raises(FormatError, match="gzip"):
        datasets.read_idx(tmp_path / "crc")
    (tmp_path / "junk").write_bytes(b"\x1f\x8b" + b"junk" * 10)
    with pytest.raises(FormatError, match="gzip"):
        datasets.read_idx(tmp_path / "junk")


# ---------------------------------------------------------------- Fashion-MNIST


def fake_fashion(folder, n_train=12, n_test=5, gz=True, label_max=9, size=28):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % (label_max + 1)).astype(np.uint8)
        suffix = ".gz" if gz else ""
        datasets.write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images)
        datasets.write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_from_a_folder(tmp_path, gz):
    arrays = fake_fashion(tmp_path / "fm", gz=gz)
    (X, y), (Xt, yt) = datasets.load_fashion_mnist(tmp_path / "fm")
    images, labels = arrays["train"]
    assert X.shape == (12, 784) and X.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(X, images.reshape(12, 784).astype(np.float32) / np.float32(255))
    assert np.array_equal(y, labels) and Xt.shape == (5, 784) and yt.shape == (5,)
    (raw, _), _ = datasets.load_fashion_mnist(str(tmp_path / "fm"), flatten=False,
                                              normalize=False)
    assert raw.dtype == np.uint8 and np.array_equal(raw, images[:, None])


@pytest.mark.parametrize("normalize", [True, False])
def test_fashion_mapped_equals_loaded(tmp_path, monkeypatch, normalize):
    # gzip'ed IDX cannot be mapped: decoded once into a .npy cache, then mapped
    fake_fashion(tmp_path / "fm")
    monkeypatch.setenv("NNCORE_CACHE", str(tmp_path / "cache"))
    loaded = datasets.load_fashion_mnist(tmp_path / "fm", normalize=normalize)
    mapped = datasets.load_fashion_mnist(tmp_path / "fm", normalize=normalize, mmap=True)
    for (X, y), (Xm, ym) in zip(loaded, mapped):
        assert isinstance(Xm, np.memmap) and not Xm.flags.writeable
        assert Xm.dtype == X.dtype and np.array_equal(X, Xm) and np.array_equal(y, ym)
    caches = sorted((tmp_path / "cache").iterdir())
    assert len(caches) == 2
    stamps = [c.stat().st_mtime_ns for c in caches]
    (Xm, _), _ = datasets.load_fashion_mnist(tmp_path / "fm", normalize=normalize, mmap=True,
                                             flatten=False)
    assert isinstance(Xm, np.memmap) and Xm.shape == (12, 1, 28, 28)
    assert [c.stat().st_mtime_ns for c in caches] == stamps      # reused, not rebuilt


def test_fashion_cache_follows_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("NNCORE_CACHE", str(tmp_path / "cache"))
    fake_fashion(tmp_path / "fm")
    datasets.load_fashion_mnist(tmp_path / "fm", mmap=True)
    images = np.full((12, 28, 28), 255, np.uint8)
    datasets.write_idx(tmp_path / "fm" / "train-images-idx3-ubyte.gz", images)
    os.utime(tmp_path / "fm" / "train-images-idx3-ubyte.gz", ns=(1, 1))
    (X, _), _ = datasets.load_fashion_mnist(tmp_path / "fm", mmap=True)
    assert (X == 1.0).all()


def test_fashion_mapped_checks_labels_with_a_cache_built(tmp_path, monkeypatch):
    monkeypatch.setenv("NNCORE_CACHE", str(tmp_path / "cache"))
    fake_fashion(tmp_path / "fm")
    datasets.load_fashion_mnist(tmp_path / "fm", mmap=True)
    datasets.write_idx(tmp_path / "fm" / "train-labels-idx1-ubyte.gz",
                       np.full(12, 10, np.uint8))
    with pytest.raises(FormatError, match="expected uint8 labels 0..9"):
        datasets.load_fashion_mnist(tmp_path / "fm", mmap=True)


@pytest.mark.parametrize("subfolder", ["fashion-mnist", ""])
def test_fashion_from_nncore_data(tmp_path, monkeypatch, subfolder):
    fake_fashion(tmp_path / subfolder, n_train=3)
    monkeypatch.setenv("NNCORE_DATA", str(tmp_path))
    (X, _), _ = datasets.load_fashion_mnist()
    assert X.shape == (3, 784)


def test_fashion_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_fashion_mnist(tmp_path / "nowhere")
    message = str(info.value)
    for needle in ("apt-get install dataset-fashion-mnist", "NNCORE_DATA", "path=",
                   str(tmp_path / "nowhere"), "train-images-idx3-ubyte.gz"):
        assert needle in message


def test_fashion_search_order_is_in_the_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NNCORE_DATA", str(tmp_path))
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_fashion_mnist()
    message = str(info.value)
    first = message.index(str(tmp_path / "fashion-mnist"))
    assert first < message.index(str(tmp_path / "debian"))


def test_fashion_partial_folder(tmp_path):
    fake_fashion(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        datasets.load_fashion_mnist(tmp_path)


def test_fashion_bad_contents(tmp_path):
    fake_fashion(tmp_path / "a", label_max=10)
    with pytest.raises(FormatError, match="label 10 is out of range"):
        datasets.load_fashion_mnist(tmp_path / "a")
    fake_fashion(tmp_path / "b", size=27)
    with pytest.raises(FormatError, match="28x28"):
        datasets.load_fashion_mnist(tmp_path / "b")
    fake_fashion(tmp_path / "c")
    datasets.write_idx(tmp_path / "c" / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(FormatError, match="expected 12 uint8 labels"):
        datasets.load_fashion_mnist(tmp_path / "c")


def real_fashion_folder():
    for folder in datasets._fashion_candidates(None):
        if all(datasets._find_file(folder, stem)
               for stems in datasets._FASHION_FILES.values() for stem in stems):
            return folder
    return None


@pytest.mark.skipif(real_fashion_folder() is None,
                    reason="Fashion-MNIST absent (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
    (X, y), (Xt, yt) = datasets.load_fashion_mnist()
    assert X.shape == (60000, 784) and Xt.shape == (10000, 784)
    assert X.dtype == Xt.dtype == np.float32 and y.dtype == yt.dtype == np.int64
    assert 0.0 <= X.min() and X.max() <= 1.0 and Xt.max() <= 1.0
    assert np.bincount(y).tolist() == [6000] * 10
    assert np.bincount(yt).tolist() == [1000] * 10
    assert len(datasets.FASHION_MNIST_CLASSES) == 10


# ---------------------------------------------------------------- splitting


def test_split_is_a_deterministic_partition():
    X = np.arange(100).reshape(50, 2)
    y = np.arange(50)
    a = datasets.train_test_split(X, y, 0.2, seed=3)
    b = datasets.train_test_split(X, y, 0.2, seed=3)
    c = datasets.train_test_split(X, y, 0.2, seed=4)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    assert not np.array_equal(a[1], c[1])
    X_train, X_test, y_train, y_test = a
    assert len(X_test) == 10 and len(X_train) == 40
    assert np.array_equal(X_train[:, 0] // 2, y_train) and np.array_equal(X_test[:, 0] // 2, y_test)
    assert sorted(np.concatenate([y_train, y_test]).tolist()) == list(range(50))
    assert len(datasets.train_test_split(X, y, 7, seed=0)[1]) == 7
    assert len(datasets.train_test_split(X, y, 0.01, seed=0)[1]) == 1  # ceil, like sklearn


def test_stratified_split_keeps_class_shares():
    X, y = datasets.load_digits()
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, 0.2, seed=0,
                                                                 stratify=True)
    n_test = int(np.ceil(0.2 * 1797))
    assert len(y_test) == n_test and len(y_train) == 1797 - n_test
    share = np.array(DIGITS_CLASS_COUNTS) * n_test / 1797
    assert np.all(np.abs(np.bincount(y_test) - share) < 1)
    assert X_train.dtype == np.float32 and y_test.dtype == np.int64
    # Each row still goes with its own label.
    rows = {X[i].tobytes(): y[i] for i in range(len(y))}
    assert all(rows[x.tobytes()] == t for x, t in zip(X_test, y_test))
    again = datasets.train_test_split(X, y, 0.2, seed=0, stratify=y)
    assert np.array_equal(again[3], y_test)
    # Test rows are shuffled, not grouped by class.
    assert not np.all(np.diff(y_test) >= 0)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"X": np.zeros((5, 2)), "y": np.zeros(4)}, ValueError, "same length"),
    ({"test_size": 0.0}, ValueError, r"\(0, 1\)"),
    ({"test_size": 1.0}, ValueError, r"\(0, 1\)"),
    ({"test_size": 0}, ValueError, "both must be >= 1"),
    ({"test_size": 5}, ValueError, "both must be >= 1"),
    ({"test_size": True}, TypeError, "test_size"),
    ({"test_size": "half"}, TypeError, "test_size"),
    ({"stratify": np.zeros(3)}, ValueError, "stratify"),
])
def test_split_errors(kwargs, error, match):
    args = {"X": np.zeros((5, 2)), "y": np.zeros(5), "test_size": 0.4, **kwargs}
    with pytest.raises(error, match=match):
        datasets.train_test_split(args.pop("X"), args.pop("y"), **args)
