"""nncore's single-file container: the format behind ``nncore.save``/``nncore.load``.

An archive holds a JSON header (the model's architecture and any metadata) and
named tensors, and is read without pickle: loading a hostile file can only
raise :class:`nncore.errors.FormatError`, never run code.

Format, version 1 (every integer little-endian)::

    offset   size  field
    0        6     magic b"NNCORE"
    6        2     format version, uint16 (this module writes and reads 1)
    8        8     header length H, uint64
    16       H     header: a UTF-8 JSON object (standard JSON: no NaN/Infinity)
    16+H     ...   zero bytes up to the next multiple of 64: the data start D
    D        ...   the tensors, in header order; tensor i starts at D + offset_i and
                   is followed by zero bytes up to a multiple of 64
    end-32   32    SHA-256 of every byte before it

The header is exactly::

    {"meta": {...},                      # any JSON object: architecture, settings
     "tensors": [{"name": "0.weight",    # unique, 1..1024 characters
                  "dtype": "float32",    # float32 float64 int32 int64 uint8
                  "shape": [784, 256],   # C order, at most 32 dimensions
                  "offset": 0,           # = sum of the padded sizes before it
                  "nbytes": 802816},     # = prod(shape) * itemsize
                 ...]}

so offset_0 = 0, offset_{i+1} = offset_i + align64(nbytes_i), and the file is
D + sum(align64(nbytes_i)) + 32 bytes long. Tensor data is little-endian.

The layout is canonical: the reader recomputes every offset, size and the
file length from the shapes and dtypes and rejects any difference, any
non-zero padding, unknown keys or dtypes, duplicate names or JSON keys, JSON
nested deeper than 64 levels, headers over 16 MiB and a wrong checksum, all
before allocating anything the size of a tensor. A version this module does
not know is refused with a message naming it.

Writes are atomic: the archive goes to a temporary file in the target's
directory, is flushed and fsync'ed, then renamed over the target. On any error
the previous file is untouched and the temporary file removed.
"""
import contextlib
import hashlib
import json
import os
import re
import struct
import tempfile

import numpy as np

from .errors import FormatError

__all__ = ["write_archive", "read_archive", "write_atomically", "MAGIC", "FORMAT_VERSION",
           "DTYPES"]

MAGIC = b"NNCORE"
FORMAT_VERSION = 1
# dtype name in the header -> the little-endian NumPy dtype stored in the file.
DTYPES = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("u1"),
}
ALIGN = 64
MAX_HEADER_BYTES = 16 << 20
MAX_JSON_DEPTH = 64
MAX_NDIM = 32
MAX_NAME_CHARS = 1024

_PREFIX = struct.Struct("<6sHQ")  # magic, version, header length
_CHECKSUM_BYTES = 32
_TENSOR_KEYS = {"name", "dtype", "shape", "offset", "nbytes"}


def _align(n):
    return -(-n // ALIGN) * ALIGN


# ---------------------------------------------------------------- writing


def _plain_json(value, where, depth=0):
    """A copy of ``value`` made of dict/list/str/int/float/bool/None only, so the
    header round-trips exactly and stays within what the reader accepts."""
    if isinstance(value, (dict, list, tuple)) and depth > MAX_JSON_DEPTH - 2:
        # meta sits inside the header object: its containers are 2 levels deeper
        raise ValueError(f"write_archive: {where} is nested more than "
                         f"{MAX_JSON_DEPTH - 1} levels deep")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            raise ValueError(f"write_archive: {where} is {value}; the header is standard "
                             "JSON, which has no NaN or Infinity (store it as a tensor "
                             "or a string)")
        return float(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"write_archive: {where} has a key {key!r} of type "
                                f"{type(key).__name__}; JSON object keys must be str")
            out[key] = _plain_json(item, f"{where}[{key!r}]", depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise TypeError(f"write_archive: {where} has type {type(value).__name__}, which is "
                    "not JSON (use dict, list, str, int, float, bool or None; put arrays "
                    "in tensors)")


def _check_name(name, complain):
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
        complain(f"tensor name {name!r} must be a str of 1 to {MAX_NAME_CHARS} characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        complain(f"tensor name {name!r} is not valid Unicode")


def _dtype_name(dtype):
    for name, stored in DTYPES.items():
        if dtype.kind == stored.kind and dtype.itemsize == stored.itemsize:
            return name
    return None


def _encode(meta, tensors):
    """Validate the inputs and return (header bytes, [(array, padded size)])."""
    if not isinstance(meta, dict):
        raise TypeError(f"write_archive: meta must be a dict, got {type(meta).__name__}")
    if not isinstance(tensors, dict):
        raise TypeError(f"write_archive: tensors must be a dict of name -> array, got "
                        f"{type(tensors).__name__}")
    entries, arrays, offset = [], [], 0
    for name, value in tensors.items():
        def complain(msg):
            raise ValueError(f"write_archive: {msg}")
        _check_name(name, complain)
        arr = np.asarray(value)
        dtype_name = _dtype_name(arr.dtype)
        if dtype_name is None:
            raise TypeError(f"write_archive: tensor {name!r} has dtype {arr.dtype}; "
                            f"expected one of {list(DTYPES)}")
        if arr.ndim > MAX_NDIM:
            raise ValueError(f"write_archive: tensor {name!r} has {arr.ndim} dimensions; "
                             f"at most {MAX_NDIM} are allowed")
        arr = np.asarray(arr, dtype=DTYPES[dtype_name], order="C")  # keeps 0-d arrays 0-d
        entries.append({"name": name, "dtype": dtype_name, "shape": list(arr.shape),
                        "offset": offset, "nbytes": arr.nbytes})
        arrays.append((arr, _align(arr.nbytes)))
        offset += _align(arr.nbytes)
    header = {"meta": _plain_json(meta, "meta"), "tensors": entries}
    text = json.dumps(header, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    data = text.encode("utf-8")
    if len(data) > MAX_HEADER_BYTES:
        raise ValueError(f"write_archive: the JSON header is {len(data)} bytes; at most "
                         f"{MAX_HEADER_BYTES} are allowed (put large data in tensors)")
    return data, arrays


class _HashingFile:
    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()

    def write(self, data):
        self.f.write(data)
        self.sha.update(data)


def _write_stream(f, header, arrays):
    out = _HashingFile(f)
    out.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)))
    out.write(header)
    out.write(bytes(_align(_PREFIX.size + len(header)) - _PREFIX.size - len(header)))
    for arr, padded in arrays:
        out.write(arr.reshape(-1).view(np.uint8))
        out.write(bytes(padded - arr.nbytes))
    f.write(out.sha.digest())


def _new_file_mode(path):
    """Keep the mode of the file being replaced; else what open() would give."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        mask = os.umask(0o077)  # restrictive while we look, in case another thread creates
        os.umask(mask)
        return 0o666 & ~mask


def write_archive(path, meta, tensors):
    """Write ``meta`` (a JSON-compatible dict) and ``tensors`` (a dict of name ->
    array of float32, float64, int32, int64 or uint8) to ``path`` atomically.

    ``path`` may be a str, bytes or path-like object. Tuples in ``meta`` are
    stored as lists and NumPy scalars as Python numbers; anything else that is
    not JSON (and NaN/Infinity) raises TypeError/ValueError before any file is
    touched. Tensor order is kept. If anything fails while writing, the file
    previously at ``path`` is left as it was and no temporary file remains.
    """
    header, arrays = _encode(meta, tensors)
    write_atomically(path, lambda f: _write_stream(f, header, arrays))


def write_atomically(path, write):
    """Call ``write(f)`` on a temporary file in ``path``'s directory, flush and
    fsync it, then rename it over ``path``: a reader sees the old file or the
    whole new one, never a part, and on any error the old file is untouched
    and the temporary file removed. The new file keeps the old one's mode."""
    path = os.fsdecode(path)
    directory = os.path.dirname(os.path.abspath(path))
    mode = _new_file_mode(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as exc:   # name the file asked for, not the temporary one
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable; not every platform/file system allows this.
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# ---------------------------------------------------------------- reading


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _reject_constant(name):
    raise ValueError(f"{name} is not standard JSON")


# Strings (skipped whole) and brackets: enough to measure nesting depth without
# recursion, before json.loads sees the text.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _json_depth_ok(text):
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return True
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        elif token in ("]", "}"):
            depth -= 1
    return True


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_header(raw, fail):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"the header is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    if not _json_depth_ok(text):
        fail(f"the JSON header is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates,
                            parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        fail(f"the JSON header has a duplicate key {exc.args[0]!r}")
    except (ValueError, RecursionError) as exc:
        fail(f"the header is not valid JSON ({exc})")
    if not isinstance(header, dict) or set(header) != {"meta", "tensors"}:
        fail('the header must be a JSON object with exactly the keys "meta" and "tensors"')
    if not isinstance(header["meta"], dict):
        fail('the header\'s "meta" must be a JSON object')
    if not isinstance(header["tensors"], list):
        fail('the header\'s "tensors" must be a JSON list')
    return header


def _check_entries(entries, fail):
    """Validate every tensor entry against the canonical layout; return the
    total size of the data section."""
    names = set()
    offset = 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != _TENSOR_KEYS:
            fail(f"tensor entry {i} must be an object with exactly the keys "
                 f"{sorted(_TENSOR_KEYS)}")
        name = entry["name"]
        _check_name(name, lambda msg: fail(f"tensor entry {i}: {msg}"))
        if name in names:
            fail(f"duplicate tensor name {name!r}")
        names.add(name)
        if not isinstance(entry["dtype"], str) or entry["dtype"] not in DTYPES:
            fail(f"tensor {name!r} has dtype {entry['dtype']!r}; expected one of "
                 f"{list(DTYPES)}")
        shape = entry["shape"]
        if (not isinstance(shape, list) or len(shape) > MAX_NDIM
                or not all(_is_count(d) for d in shape)):
            fail(f"tensor {name!r} has shape {shape!r}; expected a list of at most "
                 f"{MAX_NDIM} non-negative integers")
        nbytes = DTYPES[entry["dtype"]].itemsize
        for d in shape:
            nbytes *= d  # Python ints: no overflow; the file length check bounds it
        if not _is_count(entry["nbytes"]) or entry["nbytes"] != nbytes:
            fail(f"tensor {name!r}: nbytes {entry['nbytes']!r} does not match its shape "
                 f"and dtype ({nbytes})")
        if not _is_count(entry["offset"]) or entry["offset"] != offset:
            fail(f"tensor {name!r}: offset {entry['offset']!r}, expected {offset}")
        offset += _align(nbytes)
    return offset


def read_archive(path):
    """Read an archive written by :func:`write_archive`; return ``(meta, tensors)``.

    ``tensors`` is a dict of name -> new, writable, C-contiguous array in native
    byte order, in the order they were written. Any problem with the file's
    contents raises :class:`nncore.errors.FormatError` naming the file and the
    problem; OS errors (missing file, permissions) propagate as OSError.
    Nothing is ever unpickled or executed.
    """
    path = os.fsdecode(path)

    def fail(msg):
        raise FormatError(f"{path}: {msg}")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(_PREFIX.size)
        if not prefix:
            fail("not an nncore archive: the file is empty")
        if prefix[:len(MAGIC)] != MAGIC[:len(prefix)]:
            if prefix[:1] == b"\x80":
                fail("not an nncore archive: it looks like a Python pickle, which nncore "
                     "never loads")
            if prefix[:6] == b"\x93NUMPY" or prefix[:4] == b"PK\x03\x04":
                fail("not an nncore archive: it looks like a NumPy .npy/.npz file")
            fail(f"not an nncore archive: wrong magic bytes {prefix[:len(MAGIC)]!r}, "
                 f"expected {MAGIC!r}")
        if len(prefix) < _PREFIX.size:
            fail(f"truncated: {size} bytes is too short for an nncore archive")
        _, version, header_len = _PREFIX.unpack(prefix)
        if version != FORMAT_VERSION:
            newer = " (written by a newer nncore?)" if version > FORMAT_VERSION else ""
            fail(f"unsupported format version {version}{newer}; this nncore reads "
                 f"version {FORMAT_VERSION}")
        if header_len > MAX_HEADER_BYTES:
            fail(f"header length {header_len} exceeds the limit of {MAX_HEADER_BYTES} bytes")
        data_start = _align(_PREFIX.size + header_len)
        if data_start + _CHECKSUM_BYTES > size:
            fail(f"truncated: the header says {header_len} header bytes but the file "
                 f"has {size} bytes")
        raw_header = f.read(header_len)
        if len(raw_header) != header_len:
            fail("truncated while reading the header (was the file changed?)")
        header = _parse_header(raw_header, fail)
        data_len = _check_entries(header["tensors"], fail)
        expected = data_start + data_len + _CHECKSUM_BYTES
        if expected != size:
            what = "truncated" if size < expected else "trailing bytes"
            fail(f"{what}: the header describes a {expected}-byte file, the file has "
                 f"{size} bytes")
        # Sizes are now consistent with the file length: reading the rest is safe.
        rest = f.read(size - _PREFIX.size - header_len)
        if len(rest) != size - _PREFIX.size - header_len:
            fail("truncated while reading the data (was the file changed?)")
    body = memoryview(rest)[:-_CHECKSUM_BYTES]
    sha = hashlib.sha256(prefix)
    sha.update(raw_header)
    sha.update(body)
    if sha.digest() != rest[-_CHECKSUM_BYTES:]:
        fail("checksum mismatch: the file is corrupt")
    # Padding must be zero, so every archive has exactly one valid encoding.
    pad = data_start - _PREFIX.size - header_len
    if body[:pad].tobytes().strip(b"\0"):
        fail("non-zero padding after the header")
    tensors = {}
    for entry in header["tensors"]:
        start = pad + entry["offset"]
        end = start + entry["nbytes"]
        if body[end:start + _align(entry["nbytes"])].tobytes().strip(b"\0"):
            fail(f"non-zero padding after tensor {entry['name']!r}")
        dtype = DTYPES[entry["dtype"]]
        arr = np.frombuffer(body[start:end], dtype=dtype).reshape(entry["shape"])
        tensors[entry["name"]] = arr.astype(dtype.newbyteorder("="), copy=True)
    return header["meta"], tensors
