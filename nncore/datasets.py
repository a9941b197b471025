"""Datasets: an IDX (MNIST format) reader, Fashion-MNIST, the built-in digits.

- :func:`load_digits` returns the UCI 8x8 handwritten digits, shipped inside
  the package (1797 samples, 64 features, 10 classes).
- :func:`load_fashion_mnist` reads Fashion-MNIST (70000 28x28 grey images, 10
  classes) from a folder, ``$NNCORE_DATA``, or where Debian's
  ``dataset-fashion-mnist`` package installs it.
- :func:`read_idx`/:func:`write_idx` read and write IDX files, gzip'ed or raw.
- ``load_fashion_mnist(mmap=True)`` maps the images instead of loading them:
  several processes (MPI ranks) then share one copy in the page cache and
  each reads only the rows it trains on.
- :func:`train_test_split` splits arrays reproducibly (optionally stratified).

Features come back as float32 scaled to [0, 1] and labels as int64, ready for
``nncore.Trainer``; a bad file raises :class:`nncore.errors.FormatError`.

The digits are the test part of "Optical Recognition of Handwritten Digits"
by E. Alpaydin and C. Kaynak, UCI Machine Learning Repository (1998),
https://doi.org/10.24432/C50P49, licensed CC BY 4.0
(https://creativecommons.org/licenses/by/4.0/); nncore stores them as IDX
files (see nncore/data/README.md). :data:`DIGITS_CITATION` has the reference.
"""
import gzip
import hashlib
import os
import zlib

import numpy as np

from .errors import FormatError
from .io import write_atomically

__all__ = ["read_idx", "write_idx", "load_digits", "load_fashion_mnist",
           "train_test_split", "cache_dir", "FASHION_MNIST_CLASSES", "DEBIAN_FASHION_MNIST",
           "DIGITS_CITATION"]

DIGITS_CITATION = (
    "E. Alpaydin and C. Kaynak. Optical Recognition of Handwritten Digits [Dataset]. "
    "UCI Machine Learning Repository, 1998. https://doi.org/10.24432/C50P49. "
    "License: CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/).")

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# ---------------------------------------------------------------- IDX

# IDX type code -> big-endian element type (http://yann.lecun.com/exdb/mnist/).
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_MAX_NDIM = 32
_CHUNK = 1 << 20


def _read_upto(stream, n):
    """Read at most n bytes in bounded chunks, so a header claiming a huge size
    costs only as much memory as the data really present."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def read_idx(path):
    """Read an IDX file (the MNIST format), gzip-compressed or raw, and return
    its array in native byte order with the shape the file declares.

    Compression is detected from the content (the gzip magic bytes), not the
    file name. The header (two zero bytes, a type code, the number of
    dimensions, then one big-endian uint32 per dimension) is validated, and
    the data must have exactly the declared size; anything else raises
    :class:`nncore.errors.FormatError` naming the file.
    """
    path = os.fsdecode(path)

    def fail(msg):
        raise FormatError(f"{path}: {msg}")

    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            magic = bytes(_read_upto(stream, 4))
            if len(magic) < 4:
                fail(f"truncated: {len(magic)} bytes is too short for an IDX header")
            if magic[:2] != b"\0\0" or magic[2] not in _IDX_TYPES:
                fail(f"not an IDX file: magic bytes {magic!r} (expected 00 00, a type code "
                     f"in {sorted(_IDX_TYPES)}, then the number of dimensions)")
            ndim = magic[3]
            if not 1 <= ndim <= _IDX_MAX_NDIM:
                fail(f"IDX header declares {ndim} dimensions; expected 1 to {_IDX_MAX_NDIM}")
            dims_raw = bytes(_read_upto(stream, 4 * ndim))
            if len(dims_raw) < 4 * ndim:
                fail(f"truncated in the header: {ndim} dimensions need {4 * ndim} bytes of "
                     f"sizes, got {len(dims_raw)}")
            shape = tuple(int.from_bytes(dims_raw[4 * i:4 * i + 4], "big") for i in range(ndim))
            dtype = _IDX_TYPES[magic[2]]
            expected = dtype.itemsize
            for d in shape:
                expected *= d
            if not compressed:
                # Check against the file length before allocating anything.
                size = os.fstat(raw.fileno()).st_size
                if size != 4 + 4 * ndim + expected:
                    what = "truncated" if size < 4 + 4 * ndim + expected else "trailing bytes"
                    fail(f"{what}: shape {shape} of {dtype.name} needs {expected} data bytes, "
                         f"the file has {size - 4 - 4 * ndim}")
            data = _read_upto(stream, expected + 1)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            fail(f"truncated or corrupt gzip stream ({exc})")
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        fail(f"{what}: shape {shape} of {dtype.name} needs {expected} data bytes, "
             f"got {'more' if len(data) > expected else len(data)}")
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=False) \
        .reshape(shape)


def write_idx(path, array):
    """Write ``array`` (uint8, int8, int16, int32, float32 or float64, 1 to 32
    dimensions) as an IDX file; gzip-compressed when ``path`` ends in ``.gz``
    (with a fixed timestamp, so the bytes are reproducible)."""
    path = os.fsdecode(path)
    arr = np.asarray(array)
    for code, dtype in _IDX_TYPES.items():
        if arr.dtype.kind == dtype.kind and arr.dtype.itemsize == dtype.itemsize:
            break
    else:
        raise TypeError(f"write_idx: dtype {arr.dtype} has no IDX type code; expected one "
                        f"of {[t.name for t in _IDX_TYPES.values()]}")
    if not 1 <= arr.ndim <= _IDX_MAX_NDIM or any(d >= 2**32 for d in arr.shape):
        raise ValueError(f"write_idx: shape {arr.shape} cannot be stored in IDX (1 to "
                         f"{_IDX_MAX_NDIM} dimensions, each below 2**32)")
    header = bytes([0, 0, code, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    body = np.ascontiguousarray(arr, dtype=dtype).tobytes()
    with open(path, "wb") as f:
        if path.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(header + body)
        else:
            f.write(header + body)


def _images(images, labels, n_classes, scale, flatten, normalize, source):
    """Check an (images, labels) pair and convert it to the documented dtypes."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise FormatError(f"{source}: expected uint8 images of shape (n, h, w), got "
                          f"{images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise FormatError(f"{source}: expected {images.shape[0]} uint8 labels, got "
                          f"{labels.dtype} {labels.shape}")
    if labels.size and labels.max() >= n_classes:
        raise FormatError(f"{source}: label {labels.max()} is out of range 0..{n_classes - 1}")
    # flatten=False: NCHW images with one channel, what Conv2d takes
    X = images.reshape(len(images), -1) if flatten else images[:, None]
    if normalize:
        X = X.astype(np.float32) / np.float32(scale)
    return X, labels.astype(np.int64)


# ---------------------------------------------------------------- datasets


def load_digits(*, flatten=True, normalize=True):
    """The UCI 8x8 handwritten digits shipped with nncore: returns ``(X, y)``.

    ``X`` has shape (1797, 64) (or (1797, 1, 8, 8), NCHW, with ``flatten=False``):
    each value counts the "on" pixels of a 4x4 block of a 32x32 bitmap, 0 to 16.
    With ``normalize=True`` (the default) ``X`` is float32 divided by 16, so
    in [0, 1] (the division is exact); with ``normalize=False`` it is the
    stored uint8 counts. ``y`` is int64, the digit 0..9. The sample order is
    that of scikit-learn's ``load_digits``, and ``X * 16`` equals its data.

    Source (CC BY 4.0): see :data:`DIGITS_CITATION`.
    """
    images = read_idx(os.path.join(_DATA_DIR, "digits-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(_DATA_DIR, "digits-labels-idx1-ubyte.gz"))
    if images.max() > 16:
        raise FormatError(f"{_DATA_DIR}: digit pixel counts must be 0..16")
    return _images(images, labels, 10, 16, flatten, normalize, "the built-in digits")


def _fashion_candidates(path):
    if path is not None:
        return [os.fsdecode(path)]
    folders = []
    env = os.environ.get("NNCORE_DATA")
    if env:
        folders += [os.path.join(env, "fashion-mnist"), env]
    folders.append(DEBIAN_FASHION_MNIST)
    return folders


def _find_file(folder, stem):
    for name in (stem + ".gz", stem):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def cache_dir():
    """Where decoded data sets are cached for mapping: ``$NNCORE_CACHE``, else
    ``$XDG_CACHE_HOME/nncore``, else ``~/.cache/nncore``."""
    env = os.environ.get("NNCORE_CACHE")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nncore")


def _mapped(image_file, labels, n_classes, scale, normalize):
    """The images of ``image_file`` as a read-only memmap of a .npy cache:
    (n, h*w), float32 / scale (normalize) or uint8. A gzip'ed IDX file cannot
    be mapped, so it is decoded and checked once into the cache; the cache's
    name holds the source's path, size and mtime, so a changed source is
    decoded again. Written atomically: ranks racing to build it are safe."""
    st = os.stat(image_file)
    key = hashlib.sha256(f"{os.path.abspath(image_file)}\0{st.st_size}\0{st.st_mtime_ns}"
                         .encode()).hexdigest()[:16]
    stem = os.path.basename(image_file).split(".")[0]
    folder = cache_dir()
    target = os.path.join(folder, f"{stem}-{'f32' if normalize else 'u8'}-{key}.npy")
    if not os.path.exists(target):
        images = read_idx(image_file)
        if images.shape[1:] != (28, 28):
            raise FormatError(f"{image_file}: expected 28x28 images, got shape {images.shape}")
        X, _ = _images(images, labels, n_classes, scale, True, normalize, image_file)
        os.makedirs(folder, exist_ok=True)
        write_atomically(target, lambda f: np.save(f, X, allow_pickle=False))
    X = np.load(target, mmap_mode="r", allow_pickle=False)
    dtype = np.float32 if normalize else np.uint8
    if not isinstance(X, np.memmap) or X.dtype != dtype or X.shape != (len(labels), 784):
        raise FormatError(f"{target}: a cache of {image_file} must be {np.dtype(dtype).name} "
                          f"of shape ({len(labels)}, 784); delete it to rebuild it")
    return X


def load_fashion_mnist(path=None, *, flatten=True, normalize=True, mmap=False):
    """Fashion-MNIST: returns ``((X_train, y_train), (X_test, y_test))``.

    Looks for the four IDX files (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each gzip'ed with ``.gz`` or raw) in ``path``
    when given; else in ``$NNCORE_DATA/fashion-mnist``, then ``$NNCORE_DATA``
    when that variable is set; else in ``/usr/share/datasets/fashion-mnist``,
    where Debian's ``dataset-fashion-mnist`` package installs them.

    ``X_*`` have shape (n, 784) (or (n, 1, 28, 28), NCHW, with ``flatten=False``),
    float32 pixels divided by 255 into [0, 1] (``normalize=False``: the
    stored uint8 0..255); ``y_*`` are int64 class indices 0..9 (names in
    :data:`FASHION_MNIST_CLASSES`). The full data set has 60000 training and
    10000 test images. Raises FileNotFoundError, saying how to get the data,
    when no folder has the files.

    ``mmap=True``: ``X_*`` are read-only ``np.memmap`` arrays (the same
    values) of a ``.npy`` cache in :func:`cache_dir`, decoded from the IDX
    files the first time (the IDX files are usually gzip'ed, and gzip cannot
    be mapped): processes on one machine share the pages, and training reads
    only the rows of its batches. The labels are loaded as usual.
    """
    folders = _fashion_candidates(path)
    for folder in folders:
        files = {split: [_find_file(folder, stem) for stem in stems]
                 for split, stems in _FASHION_FILES.items()}
        missing = [stem for split, stems in _FASHION_FILES.items()
                   for stem, f in zip(stems, files[split]) if f is None]
        if not missing:
            break
        if len(missing) < 4:
            raise FileNotFoundError(f"Fashion-MNIST: {folder} has only some of the files; "
                                    f"missing {', '.join(missing)} (.gz or raw)")
    else:
        raise FileNotFoundError(
            "Fashion-MNIST not found (looked in " + ", ".join(folders) + "). Get it with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; it installs to "
            f"{DEBIAN_FASHION_MNIST}), or download train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
            "t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist "
            "into a folder and pass it as path= or set NNCORE_DATA to it.")
    out = []
    for split in ("train", "test"):
        image_file, label_file = files[split]
        labels = read_idx(label_file)
        if mmap:
            X = _mapped(image_file, labels, 10, 255, normalize)
            # (_images checked the labels if it built the cache just now)
            if labels.dtype != np.uint8 or labels.ndim != 1 or (labels.size
                                                                and labels.max() >= 10):
                raise FormatError(f"{label_file}: expected uint8 labels 0..9 of shape (n,), "
                                  f"got {labels.dtype} {labels.shape}")
            out.append((X if flatten else X.reshape(len(X), 1, 28, 28),
                        labels.astype(np.int64)))
            continue
        images = read_idx(image_file)
        if images.shape[1:] != (28, 28):
            raise FormatError(f"{image_file}: expected 28x28 images, got shape {images.shape}")
        out.append(_images(images, labels, 10, 255, flatten, normalize, image_file))
    return tuple(out)


def train_test_split(X, y, test_size=0.25, *, seed=None, stratify=False):
    """Split ``X`` and ``y`` into ``X_train, X_test, y_train, y_test``.

    ``test_size`` is a fraction in (0, 1) or a number of test samples. The
    rows are shuffled with ``numpy.random.default_rng(seed)``: the same seed
    gives the same split. ``stratify=True`` keeps each class's share of
    ``y`` in both parts (each class gets its share of the test rows, rounded
    by largest remainder); ``stratify`` may also be an array of group labels.
    Arrays are indexed, never converted, so dtypes are kept.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    n = len(X)
    if X.ndim == 0 or y.ndim == 0 or len(y) != n:
        raise ValueError(f"train_test_split: X and y must have the same length, got "
                         f"shapes {X.shape} and {y.shape}")
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.number)):
        raise TypeError(f"train_test_split: test_size must be a fraction or a count, got "
                        f"{test_size!r}")
    if isinstance(test_size, (int, np.integer)):
        n_test = int(test_size)
    elif 0.0 < test_size < 1.0:
        n_test = int(np.ceil(test_size * n))
    else:
        raise ValueError(f"train_test_split: a fractional test_size must be in (0, 1), got "
                         f"{test_size}")
    if not 1 <= n_test <= n - 1:
        raise ValueError(f"train_test_split: test_size={test_size!r} of {n} samples leaves "
                         f"{n_test} test and {n - n_test} training samples; both must be >= 1")
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"train_test_split: seed must be None or an int >= 0, got {seed!r} "
                        f"({exc})") from None
    if stratify is False or stratify is None:
        order = rng.permutation(n)
        test, train = order[:n_test], order[n_test:]
    else:
        groups = y if stratify is True else np.asarray(stratify)
        if groups.shape[:1] != (n,):
            raise ValueError(f"train_test_split: stratify has shape {groups.shape}, "
                             f"expected {n} labels")
        try:
            classes, inverse, counts = np.unique(groups, axis=0 if groups.ndim > 1 else None,
                                                 return_inverse=True, return_counts=True)
        except TypeError as exc:
            raise TypeError(f"train_test_split: the stratify labels cannot be sorted ({exc})") \
                from None
        inverse = inverse.reshape(-1)
        # Largest remainder: each class's exact share, floors first, then the
        # largest fractional parts (ties to the first class) take the rest.
        share = counts * n_test / n
        per_class = np.floor(share).astype(np.int64)
        extra = n_test - per_class.sum()
        per_class[np.argsort(-(share - per_class), kind="stable")[:extra]] += 1
        test, train = [], []
        for c in range(len(classes)):
            members = rng.permutation(np.flatnonzero(inverse == c))
            test.append(members[:per_class[c]])
            train.append(members[per_class[c]:])
        test = rng.permutation(np.concatenate(test))
        train = rng.permutation(np.concatenate(train))
    return X[train], X[test], y[train], y[test]
