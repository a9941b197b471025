"""nncore.io: the single-file archive behind nncore.save/load.

Hostile files are built here by an independent writer that follows the
format as the module docstring specifies it, with a valid checksum, so every
structural check in the reader is reached (not just the checksum)."""
import hashlib
import json
import os
import pathlib
import pickle
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nncore import io
from nncore.errors import FormatError

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def align64(n):
    return (n + 63) // 64 * 64


def raw_archive(header, body=b"", *, magic=b"NNCORE", version=1, header_len=None,
                pad_byte=b"\0"):
    """An archive per the spec: prefix, header (a dict is JSON-encoded), zero
    padding to 64, body, SHA-256 of everything before it."""
    if not isinstance(header, bytes):
        header = json.dumps(header).encode()
    n = len(header) if header_len is None else header_len
    data = struct.pack("<6sHQ", magic, version, n) + header
    data += pad_byte * (align64(len(data)) - len(data)) + body
    return data + hashlib.sha256(data).digest()


def entry(name, dtype, shape, offset=0):
    nbytes = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    return {"name": name, "dtype": dtype, "shape": list(shape), "offset": offset,
            "nbytes": nbytes}


def read_bytes(tmp_path, data, name="hostile.nnc"):
    path = tmp_path / name
    path.write_bytes(data)
    return io.read_archive(path)


def example_tensors():
    rng = np.random.default_rng(0)
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4e38], np.float32)
    special[0] = np.frombuffer(b"\x01\x00\xc0\x7f", np.float32)[0]  # a NaN payload
    return {
        "layer.0.weight": rng.standard_normal((7, 5)).astype(np.float32),
        "layer.0.bias": rng.standard_normal(5).astype(np.float32),
        "special": special,
        "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
        "strided": np.arange(40, dtype=np.int32).reshape(5, 8)[:, ::3],
        "labels": np.array([0, 9, -1, 2**40], dtype=np.int64),
        "bytes": np.arange(256, dtype=np.uint8),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 4), np.float32),
        "ünï cödé/∑": np.ones((1, 1, 1), np.float32),
    }


META = {"architecture": [{"type": "Dense", "in": 7, "out": 5, "activation": None},
                         {"type": "ReLU"}],
        "lr": 0.01, "classes": ["cat", "dög", "🐟"], "flags": [True, False],
        "nested": {"a": {"b": {"c": []}}}, "big": 2**70}


@pytest.mark.parametrize("kind", ["str", "pathlib", "bytes"])
def test_round_trip_is_bitwise(tmp_path, kind):
    path = {"str": str(tmp_path / "m.nnc"), "pathlib": tmp_path / "m.nnc",
            "bytes": os.fsencode(tmp_path / "m.nnc")}[kind]
    tensors = example_tensors()
    io.write_archive(path, META, tensors)
    meta, back = io.read_archive(path)
    assert meta == META
    assert list(back) == list(tensors)
    for name, original in tensors.items():
        original = np.asarray(original)
        got = back[name]
        assert got.shape == original.shape, name
        assert got.dtype == original.dtype.newbyteorder("="), name
        assert got.flags.c_contiguous and got.flags.writeable and got.flags.owndata, name
        expected = np.ascontiguousarray(original, dtype=got.dtype)
        assert got.tobytes() == expected.tobytes(), name


def test_file_layout_follows_the_spec(tmp_path):
    """Parse a written archive by hand, per the module docstring."""
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
               "y": np.array([3, 1], np.int64)}
    io.write_archive(tmp_path / "m.nnc", {"k": "v"}, tensors)
    data = (tmp_path / "m.nnc").read_bytes()
    magic, version, hlen = struct.unpack("<6sHQ", data[:16])
    assert (magic, version) == (b"NNCORE", 1)
    header = json.loads(data[16:16 + hlen].decode("utf-8"))
    assert header == {"meta": {"k": "v"}, "tensors": [
        {"name": "w", "dtype": "float32", "shape": [2, 3], "offset": 0, "nbytes": 24},
        {"name": "y", "dtype": "int64", "shape": [2], "offset": 64, "nbytes": 16}]}
    start = align64(16 + hlen)
    assert data[16 + hlen:start] == bytes(start - 16 - hlen)
    assert data[start:start + 24] == struct.pack("<6f", 0, 1, 2, 3, 4, 5)
    assert data[start + 64:start + 80] == struct.pack("<2q", 3, 1)
    assert len(data) == start + 128 + 32
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()
    # ...and the independent writer used by the hostile tests produces the same bytes.
    assert raw_archive(data[16:16 + hlen], data[start:-32]) == data


def test_writes_are_deterministic(tmp_path):
    io.write_archive(tmp_path / "a", META, example_tensors())
    io.write_archive(tmp_path / "b", META, example_tensors())
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_empty_archive_and_numpy_scalars_in_meta(tmp_path):
    io.write_archive(tmp_path / "e", {}, {})
    assert io.read_archive(tmp_path / "e") == ({}, {})
    meta = {"n": np.int64(3), "x": np.float32(0.5), "b": np.bool_(True), "t": (1, (2, 3))}
    io.write_archive(tmp_path / "m", meta, {})
    back, _ = io.read_archive(tmp_path / "m")
    assert back == {"n": 3, "x": 0.5, "b": True, "t": [1, [2, 3]]}
    assert type(back["n"]) is int and type(back["b"]) is bool


def deep(levels):
    value = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_deepest_meta_the_reader_accepts_can_be_written(tmp_path):
    meta = {"d": deep(io.MAX_JSON_DEPTH - 2)}  # header object and meta take 2 levels
    io.write_archive(tmp_path / "m", meta, {})
    assert io.read_archive(tmp_path / "m")[0] == meta
    with pytest.raises(ValueError, match="nested"):
        io.write_archive(tmp_path / "m2", {"d": deep(io.MAX_JSON_DEPTH - 1)}, {})


@pytest.mark.parametrize("meta, tensors, error, match", [
    ([], {}, TypeError, "meta must be a dict"),
    ({}, [], TypeError, "tensors must be a dict"),
    ({1: 2}, {}, TypeError, "keys must be str"),
    ({"x": float("nan")}, {}, ValueError, "NaN"),
    ({"x": [float("inf")]}, {}, ValueError, "Infinity"),
    ({"x": {1, 2}}, {}, TypeError, "set"),
    ({"x": np.zeros(3)}, {}, TypeError, "ndarray"),
    ({}, {"o": np.array([1, "a"], dtype=object)}, TypeError, "'o' has dtype object"),
    ({}, {"h": np.zeros(2, np.float16)}, TypeError, "float16"),
    ({}, {"c": np.zeros(2, np.complex64)}, TypeError, "complex64"),
    ({}, {"b": np.zeros(2, bool)}, TypeError, "bool"),
    ({}, {"": np.zeros(2, np.float32)}, ValueError, "name"),
    ({}, {7: np.zeros(2, np.float32)}, ValueError, "name"),
    ({}, {"x" * 1025: np.zeros(2, np.float32)}, ValueError, "name"),
    ({}, {"\ud800": np.zeros(2, np.float32)}, ValueError, "Unicode"),
])
def test_write_rejects_bad_input_before_touching_files(tmp_path, meta, tensors, error, match):
    with pytest.raises(error, match=match):
        io.write_archive(tmp_path / "m.nnc", meta, tensors)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- atomicity


class Boom(Exception):
    pass


def fail_on_call(n):
    calls = []

    def fn(*args, **kwargs):
        calls.append(1)
        if len(calls) >= n:
            raise Boom("simulated failure")
        return original_write(*args, **kwargs)
    return fn


original_write = io._HashingFile.write


@pytest.mark.parametrize("where", ["third write", "fifth write", "fsync", "chmod", "replace",
                                   "interrupt"])
def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, where):
    path = tmp_path / "model.nnc"
    io.write_archive(path, {"version": "old"}, {"w": np.zeros(3, np.float32)})
    old = path.read_bytes()
    if where == "third write":
        monkeypatch.setattr(io._HashingFile, "write", fail_on_call(3))
    elif where == "fifth write":  # after the header, in the middle of the tensor data
        monkeypatch.setattr(io._HashingFile, "write", fail_on_call(5))
    elif where == "interrupt":
        def interrupt(*args):
            raise KeyboardInterrupt
        monkeypatch.setattr(io._HashingFile, "write", interrupt)
    else:
        def boom(*args):
            raise Boom(where)
        monkeypatch.setattr(io.os, where, boom)
    with pytest.raises(KeyboardInterrupt if where == "interrupt" else Boom):
        io.write_archive(path, {"version": "new"}, {"w": np.ones((50, 3), np.float32),
                                                    "b": np.ones(3, np.float32)})
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["model.nnc"]
    assert io.read_archive(path)[0] == {"version": "old"}


def test_replace_overwrites_and_keeps_mode(tmp_path):
    path = tmp_path / "m.nnc"
    io.write_archive(path, {"v": 1}, {})
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    os.chmod(path, 0o600)
    io.write_archive(path, {"v": 2}, {})
    assert path.stat().st_mode & 0o777 == 0o600
    assert io.read_archive(path)[0] == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.nnc"]


# ---------------------------------------------------------------- hostile files


def small_archive(tmp_path):
    io.write_archive(tmp_path / "small.nnc", {"arch": "mlp", "sizes": [3, 2]},
                     {"w": np.arange(6, dtype=np.float32).reshape(3, 2),
                      "y": np.array([1, 0], np.int64)})
    return (tmp_path / "small.nnc").read_bytes()


def test_every_truncation_raises_format_error(tmp_path):
    data = small_archive(tmp_path)
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            read_bytes(tmp_path, data[:cut])
    for extra in (b"\0", b"x" * 100):
        with pytest.raises(FormatError, match="trailing bytes"):
            read_bytes(tmp_path, data + extra)


def test_every_bit_flip_raises_format_error(tmp_path):
    data = bytearray(small_archive(tmp_path))
    for i in range(len(data)):
        for bit in range(8):
            data[i] ^= 1 << bit
            with pytest.raises(FormatError):
                read_bytes(tmp_path, bytes(data))
            data[i] ^= 1 << bit


class Payload:
    """Unpickling this would create a directory: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_files_are_refused_without_running_them(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.nnc"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=protocol))
    match = "pickle" if protocol >= 2 else "magic"
    with pytest.raises(FormatError, match=match):
        io.read_archive(path)
    assert not marker.exists()


def test_numpy_files_are_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="NumPy"):
        io.read_archive(tmp_path / "o.npy")
    np.savez(tmp_path / "z.npz", a=np.zeros(3))
    with pytest.raises(FormatError, match="NumPy"):
        io.read_archive(tmp_path / "z.npz")


W = entry("w", "float32", [2])
W_BODY = struct.pack("<2f", 1, 2) + bytes(56)


HOSTILE = [
    (b"", "empty"),
    (b"NNC", "truncated"),
    (b"NNCORE\x01\x00\x00", "truncated"),
    (b"GIF89a" + bytes(100), "magic"),
    (raw_archive({"meta": {}, "tensors": []}, magic=b"NNCORF"), "magic"),
    (raw_archive({"meta": {}, "tensors": []}, version=0), "version 0"),
    (raw_archive({"meta": {}, "tensors": []}, version=2), "version 2.*newer"),
    (raw_archive({"meta": {}, "tensors": []}, version=65535), "version 65535"),
    (raw_archive(b"{}", header_len=2**63), "header length"),
    (raw_archive(b"{}", header_len=1000), "truncated"),
    (raw_archive(b'{"meta":{},"tensors":[]}\xff'), "UTF-8"),
    (raw_archive(b'{"meta":{},"tensors":[]'), "not valid JSON"),
    (raw_archive(b'\xef\xbb\xbf{"meta":{},"tensors":[]}'), "not valid JSON"),
    (raw_archive(b'{"meta":{"x":NaN},"tensors":[]}'), "NaN"),
    (raw_archive(b'{"meta":{"x":-Infinity},"tensors":[]}'), "Infinity"),
    (raw_archive(b'{"meta":{},"meta":{},"tensors":[]}'), "duplicate key 'meta'"),
    (raw_archive(b'{"meta":{"a":1,"a":2},"tensors":[]}'), "duplicate key 'a'"),
    (raw_archive(b'{"meta":' + b"[" * 100000 + b"]" * 100000 + b',"tensors":[]}'), "nested"),
    (raw_archive(b'{"meta":{"s":"' + b"[" * 1000 + b'"},"tensors":[]}'), None),  # in a string: fine
    (raw_archive(b'{"meta":{},"tensors":[],"x":1}'), "exactly the keys"),
    (raw_archive(b"[]"), "exactly the keys"),
    (raw_archive(b'{"meta":[],"tensors":[]}'), '"meta" must be'),
    (raw_archive(b'{"meta":{},"tensors":{}}'), '"tensors" must be'),
    (raw_archive({"meta": {}, "tensors": [[]]}), "entry 0"),
    (raw_archive({"meta": {}, "tensors": [dict(W, extra=1)]}, W_BODY), "entry 0"),
    (raw_archive({"meta": {}, "tensors": [dict(W, name="")]}, W_BODY), "name"),
    (raw_archive({"meta": {}, "tensors": [dict(W, name=3)]}, W_BODY), "name"),
    (raw_archive({"meta": {}, "tensors": [dict(W, name="\ud800")]}, W_BODY), "Unicode"),
    (raw_archive({"meta": {}, "tensors": [W, dict(W, offset=64)]}, W_BODY * 2),
     "duplicate tensor name 'w'"),
    (raw_archive({"meta": {}, "tensors": [dict(W, dtype="object")]}, W_BODY), "dtype 'object'"),
    (raw_archive({"meta": {}, "tensors": [dict(W, dtype="O")]}, W_BODY), "dtype 'O'"),
    (raw_archive({"meta": {}, "tensors": [dict(W, dtype="<f4")]}, W_BODY), "dtype '<f4'"),
    (raw_archive({"meta": {}, "tensors": [dict(W, dtype=["float32"])]}, W_BODY), "dtype"),
    (raw_archive({"meta": {}, "tensors": [dict(W, dtype=None)]}, W_BODY), "dtype"),
    (raw_archive({"meta": {}, "tensors": [dict(W, shape=[-2])]}, W_BODY), "shape"),
    (raw_archive({"meta": {}, "tensors": [dict(W, shape=[2.0])]}, W_BODY), "shape"),
    (raw_archive({"meta": {}, "tensors": [dict(W, shape=[True, 2])]}, W_BODY), "shape"),
    (raw_archive({"meta": {}, "tensors": [dict(W, shape="2")]}, W_BODY), "shape"),
    (raw_archive({"meta": {}, "tensors": [dict(W, shape=[1] * 33)]}, W_BODY), "shape"),
    (raw_archive({"meta": {}, "tensors": [dict(W, nbytes=4)]}, W_BODY), "nbytes"),
    (raw_archive({"meta": {}, "tensors": [dict(W, nbytes=8.0)]}, W_BODY), "nbytes"),
    (raw_archive({"meta": {}, "tensors": [dict(W, offset=64)]}, bytes(64) + W_BODY), "offset"),
    (raw_archive({"meta": {}, "tensors": [dict(W, offset=-64)]}, W_BODY), "offset"),
    (raw_archive({"meta": {}, "tensors": [entry("w", "float32", [2**40, 2**40])]}, W_BODY),
     "truncated"),
    (raw_archive({"meta": {}, "tensors": [entry("w", "int64", [2**62] * 32)]}, W_BODY),
     "truncated"),
    (raw_archive(b'{"meta":{},"tensors":[{"name":"w","dtype":"uint8","shape":[1' + b"0" * 5000
                 + b'],"offset":0,"nbytes":0}]}'), "not valid JSON"),
    (raw_archive({"meta": {}, "tensors": [W]}, W_BODY + bytes(64)), "trailing bytes"),
    (raw_archive({"meta": {}, "tensors": [W]}, W_BODY[:-1] + b"\1"), "padding after tensor"),
    (raw_archive({"meta": {}, "tensors": [W]}, W_BODY, pad_byte=b" "), "padding after the header"),
]


@pytest.mark.parametrize("data, match", HOSTILE,
                         ids=[f"{i}-{match or 'accepted'}" for i, (_, match) in enumerate(HOSTILE)])
def test_hostile_files_with_valid_checksums(tmp_path, data, match):
    if match is None:
        read_bytes(tmp_path, data)
        return
    with pytest.raises(FormatError, match=match) as info:
        read_bytes(tmp_path, data)
    assert "hostile.nnc" in str(info.value)


def test_format_error_is_a_value_error(tmp_path):
    with pytest.raises(ValueError):
        read_bytes(tmp_path, b"junk")


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.read_archive(tmp_path / "nope.nnc")


def test_checksum_catches_a_consistent_looking_change(tmp_path):
    data = bytearray(small_archive(tmp_path))
    start = data.index(b"\0\0\x80\x3f")  # the float 1.0 in "w"
    data[start + 3] = 0x40  # 1.0 -> 2.0: a well-formed file, just not the one written
    with pytest.raises(FormatError, match="checksum"):
        read_bytes(tmp_path, bytes(data))


# ---------------------------------------------------------------- fuzzing


def outcome(tmp_path, data):
    """read_archive either succeeds or raises FormatError; nothing else."""
    try:
        return read_bytes(tmp_path, data)
    except FormatError:
        return None


@FUZZ
@given(data=st.binary(max_size=600))
def test_fuzz_random_bytes(tmp_path, data):
    assert outcome(tmp_path, data) is None


@FUZZ
@given(tail=st.binary(max_size=400), hlen=st.integers(0, 2**64 - 1) | st.integers(0, 400))
def test_fuzz_random_bytes_after_a_valid_prefix(tmp_path, tail, hlen):
    assert outcome(tmp_path, struct.pack("<6sHQ", b"NNCORE", 1, hlen) + tail) is None


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(["set", "insert", "delete"]),
                                st.integers(0, 10**6), st.integers(0, 255)),
                      min_size=1, max_size=5))
def test_fuzz_mutations_of_a_valid_archive(tmp_path, edits):
    original = small_archive(tmp_path)
    data = bytearray(original)
    for op, pos, byte in edits:
        pos %= len(data) + (op == "insert")
        if op == "set":
            data[pos] = byte
        elif op == "insert":
            data.insert(pos, byte)
        elif len(data) > 1:
            del data[pos]
    result = outcome(tmp_path, bytes(data))
    if bytes(data) == original:
        meta, tensors = result
        assert meta == {"arch": "mlp", "sizes": [3, 2]} and list(tensors) == ["w", "y"]
    else:
        assert result is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20)
entries = st.fixed_dictionaries({
    "name": st.text(max_size=3) | st.integers(),
    "dtype": st.sampled_from(["float32", "int64", "uint8", "float16", "object"]) | json_values,
    "shape": st.lists(st.integers(-1, 3) | json_values, max_size=3) | json_values,
    "offset": st.sampled_from([0, 64, 128]) | json_values,
    "nbytes": st.integers(0, 64) | json_values,
})


@FUZZ
@given(meta=json_values, tensors=st.lists(entries, max_size=3) | json_values,
       body=st.binary(max_size=200))
def test_fuzz_structured_headers_with_valid_checksums(tmp_path, meta, tensors, body):
    """Headers that parse as JSON (so they reach the entry checks) and carry a
    valid checksum: read_archive succeeds only when everything is consistent."""
    try:
        header = json.dumps({"meta": meta, "tensors": tensors})
    except ValueError:
        return
    result = outcome(tmp_path, raw_archive(header.encode(), body))
    if result is not None:
        meta_back, tensors_back = result
        assert meta_back == meta and isinstance(meta, dict)
        assert [e["name"] for e in tensors] == list(tensors_back)
        for e in tensors:
            assert tensors_back[e["name"]].nbytes == e["nbytes"]


def test_read_accepts_pathlike_objects(tmp_path):
    class Custom(os.PathLike):
        def __fspath__(self):
            return str(tmp_path / "c.nnc")
    io.write_archive(Custom(), {"a": 1}, {"x": np.ones(2, np.float32)})
    assert io.read_archive(pathlib.PurePath(tmp_path / "c.nnc"))[0] == {"a": 1}
