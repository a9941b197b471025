"""nncore.onnx: nncore -> ONNX -> onnxruntime for every layer and random nets,
ONNX -> nncore -> ONNX stable, PyTorch -> ONNX -> nncore, and hostile files
(each a FormatError, nothing allocated that the file merely claims), fuzzed
the way tests/test_fuzz.py fuzzes the native format."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import nncore as nn  # noqa: E402
from nncore import onnx as nox  # noqa: E402
from nncore.errors import FormatError  # noqa: E402
from torch_nets import export_torch  # noqa: E402

F32 = np.float32
RTOL = 1e-5


def _randomize_bn(model, seed=0):
    """Running statistics and affine parameters away from their defaults, so
    BatchNorm really computes something."""
    rng = np.random.default_rng(seed)
    for layer in _walk(model):
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = layer.num_features
            layer.running_mean[...] = rng.standard_normal(c) * 0.5
            layer.running_var[...] = rng.uniform(0.5, 2.0, c)
            if layer.affine:
                layer.weight[...] = rng.uniform(0.5, 1.5, c)
                layer.bias[...] = rng.standard_normal(c) * 0.1
    return model


def _walk(layer):
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from _walk(child)
    for name in ("body", "shortcut"):
        if getattr(layer, name, None) is not None and isinstance(layer, nn.Residual):
            yield from _walk(getattr(layer, name))


def _ort(path, X):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})[0]


def _close(got, ref, rtol=RTOL):
    """Equal within rtol of the output's scale (elementwise relative error
    means nothing for outputs near zero)."""
    assert got.shape == ref.shape
    scale = max(float(np.abs(ref).max()), 1e-30)
    assert float(np.abs(got.astype(np.float64) - ref).max()) <= rtol * scale


def _round_trip(model, shape, tmp_path, opset=17, batch=5):
    """Export, check, run in onnxruntime, load back: everything must agree."""
    model.eval()
    path = tmp_path / "m.onnx"
    nox.export(model, path, input_shape=shape, opset=opset)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    X = np.random.default_rng(1).standard_normal((batch,) + tuple(shape)).astype(F32)
    ref = model.predict(X)
    _close(_ort(path, X), ref)
    back = nox.load(path)
    _close(back.predict(X), ref, 1e-6)
    return path, back


def _graph_summary(path):
    """Operators with their attributes, and initializer values in order:
    the graph without its names."""
    proto = onnx.load(str(path))
    ops = [(n.op_type, sorted((a.name, str(helper.get_attribute_value(a)))
                              for a in n.attribute)) for n in proto.graph.node]
    weights = sorted((tuple(t.dims), numpy_helper.to_array(t).tobytes())
                     for t in proto.graph.initializer)
    return ops, weights


# ---------------------------------------------------------------- every layer

def _layers():
    """(id, model factory, sample shape) for every layer type and option."""
    cases = [("dense", lambda: nn.Sequential(nn.Dense(6, 4)), (6,)),
             ("dense-nobias", lambda: nn.Sequential(nn.Dense(6, 4, bias=False)), (6,))]
    for act in ("relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax"):
        cases.append((f"dense-{act}", lambda act=act: nn.Sequential(nn.Dense(6, 5, act)), (6,)))
    for cls in (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Softmax):
        cases.append((cls.__name__, lambda cls=cls: nn.Sequential(nn.Dense(6, 5), cls()), (6,)))
    cases += [
        ("LeakyReLU", lambda: nn.Sequential(nn.Dense(6, 5), nn.LeakyReLU(0.2)), (6,)),
        ("Dropout", lambda: nn.Sequential(nn.Dense(6, 5), nn.Dropout(0.4), nn.Dense(5, 2)), (6,)),
        ("Flatten", lambda: nn.Sequential(nn.Flatten(), nn.Dense(12, 3)), (3, 2, 2)),
        ("Conv2d", lambda: nn.Sequential(nn.Conv2d(3, 4, 3)), (3, 7, 6)),
        ("Conv2d-options", lambda: nn.Sequential(
            nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2,
                      bias=False, activation="relu")), (4, 9, 8)),
        ("Conv2d-same-tanh", lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding="same", activation="tanh")), (2, 5, 5)),
        ("MaxPool2d", lambda: nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1)), (2, 7, 7)),
        ("AvgPool2d", lambda: nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)), (2, 7, 7)),
        ("AvgPool2d-nopad", lambda: nn.Sequential(nn.AvgPool2d(2)), (2, 6, 6)),
        ("GlobalAvgPool2d", lambda: nn.Sequential(nn.GlobalAvgPool2d(), nn.Dense(3, 2)),
         (3, 4, 5)),
        ("BatchNorm1d", lambda: nn.Sequential(nn.Dense(6, 5), nn.BatchNorm1d(5)), (6,)),
        ("BatchNorm1d-3d", lambda: nn.Sequential(nn.BatchNorm1d(3, eps=1e-3)), (3, 7)),
        ("BatchNorm2d", lambda: nn.Sequential(nn.BatchNorm2d(3, momentum=0.2)), (3, 4, 4)),
        ("BatchNorm2d-noaffine", lambda: nn.Sequential(nn.BatchNorm2d(3, affine=False)),
         (3, 4, 4)),
        ("Residual-identity", lambda: nn.Sequential(nn.Residual(
            nn.Sequential(nn.Dense(5, 5), nn.ReLU(), nn.Dense(5, 5)))), (5,)),
        ("Residual-projection", lambda: nn.Sequential(nn.Residual(
            nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)),
            nn.Conv2d(2, 4, 1))), (2, 5, 5)),
        ("Residual-nested", lambda: nn.Sequential(nn.Residual(nn.Sequential(
            nn.Dense(4, 4), nn.Residual(nn.Sequential(nn.Tanh(), nn.Dense(4, 4))), nn.GELU()))),
         (4,)),
        ("empty", lambda: nn.Sequential(nn.Dropout(0.1)), (3,)),
    ]
    return cases


@pytest.mark.parametrize("name,make,shape", _layers(), ids=[c[0] for c in _layers()])
def test_every_layer_round_trips_through_onnxruntime(name, make, shape, tmp_path):
    nn.manual_seed(0)
    model = _randomize_bn(make())
    path, back = _round_trip(model, shape, tmp_path)
    # ONNX -> nncore -> ONNX gives the same graph, and from then on the same bytes
    again = tmp_path / "again.onnx"
    nox.export(back, again, input_shape=shape)
    assert _graph_summary(again) == _graph_summary(path)
    third = tmp_path / "third.onnx"
    nox.export(nox.load(again), third, input_shape=shape)
    assert third.read_bytes() == again.read_bytes()


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_gelu_at_every_opset(opset, tmp_path):
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(4, 6), nn.GELU(), nn.Dense(6, 2, activation="gelu"))
    path, _ = _round_trip(model, (4,), tmp_path, opset=opset)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ("Gelu" in ops) == (opset >= 20) and ("Erf" in ops) == (opset < 20)


def test_random_mlps(tmp_path):
    rng = np.random.default_rng(7)
    acts = [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, lambda: nn.LeakyReLU(0.05)]
    for trial in range(6):
        nn.manual_seed(trial)
        widths = rng.integers(1, 40, rng.integers(2, 6)).tolist()
        layers = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Dense(a, b), acts[rng.integers(len(acts))]()]
            if rng.random() < 0.3:
                layers.append(nn.Dropout(0.2))
        if rng.random() < 0.5:
            layers.append(nn.Softmax())
        _round_trip(nn.Sequential(*layers), (widths[0],), tmp_path, batch=int(rng.integers(1, 9)))


def test_small_cnn_and_resnet8(tmp_path):
    nn.manual_seed(0)
    _round_trip(nn.models.small_cnn(image_size=12), (1, 12, 12), tmp_path, batch=3)
    for skip in (True, False):
        model = _randomize_bn(nn.models.resnet(8, skip=skip), seed=int(skip))
        path, back = _round_trip(model, (1, 10, 10), tmp_path, batch=3)
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert ("Add" in ops) == skip
        if skip:        # (without skips the blocks' Sequentials come back flattened)
            assert back.get_config() == model.get_config()


def test_file_metadata_and_symbolic_batch(tmp_path):
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(3, 2))
    path = tmp_path / "m.onnx"
    nox.export(model, path)                      # input_shape from the first Dense
    proto = onnx.load(str(path))
    assert proto.producer_name == "nncore" and proto.producer_version == nn.__version__
    assert {p.key: p.value for p in proto.metadata_props}["nncore_version"] == nn.__version__
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("input", "output")
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (1, 7):
        X = np.ones((batch, 3), F32)
        _close(_ort(path, X), model.predict(X))


# ---------------------------------------------------------------- export errors

@nn.register_layer
class Doubler(nn.Layer):
    """A layer nncore knows and ONNX export does not."""
    same_shape = True

    def forward(self, x):
        return x * 2


def test_export_refuses_before_writing(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    model = nn.Sequential(nn.Dense(3, 3), nn.Residual(nn.Sequential(Doubler())))
    with pytest.raises(TypeError, match=r"layer 1\.body\.0 \(Doubler\) has no ONNX form"):
        nox.export(model, path)
    bad = nn.Sequential(nn.Dense(3, 3))
    bad.layers[0].weight[0, 0] = np.nan
    with pytest.raises(ValueError, match="'0.weight' holds NaN"):
        nox.export(bad, path)
    with pytest.raises(TypeError, match="running statistics"):
        nox.export(nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False)), path,
                   input_shape=(3,))
    with pytest.raises(ValueError, match="pass input_shape"):
        nox.export(nn.models.small_cnn(), path)
    with pytest.raises(ValueError, match="cannot take samples of shape"):
        nox.export(nn.models.small_cnn(), path, input_shape=(3, 28, 28))
    with pytest.raises(ValueError, match="opset"):
        nox.export(nn.Sequential(nn.Dense(3, 3)), path, opset=9)
    with pytest.raises(TypeError, match="expected an nncore model"):
        nox.export("model", path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.onnx"]    # no temporary file left


# ---------------------------------------------------------------- hostile files

def _model_proto(nodes, inits, shape=(3,), out="y", opset=17, extra_inputs=()):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])]
        + list(extra_inputs),
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return proto


def _gemm(w=None, b=None, trans_b=0):
    w = np.arange(6, dtype=F32).reshape(3, 2) if w is None else w
    inits = [numpy_helper.from_array(np.asarray(w), "w")]
    inputs = ["x", "w"]
    if b is not None:
        inits.append(numpy_helper.from_array(np.asarray(b), "b"))
        inputs.append("b")
    return [helper.make_node("Gemm", inputs, ["y"], transB=trans_b)], inits


def _write(tmp_path, proto, name="m.onnx"):
    path = tmp_path / name
    path.write_bytes(proto.SerializeToString())
    return path


def test_pytorch_style_gemm_matmul_and_conversions(tmp_path):
    w = np.arange(6, dtype=F32).reshape(2, 3)            # (out, in): transB=1
    model = nox.load(_write(tmp_path, _model_proto(*_gemm(w, np.ones(2, F32), trans_b=1))))
    np.testing.assert_allclose(model.predict(np.ones((1, 3), F32)), [[4.0, 13.0]])
    # MatMul + Add, float64 and float16 initializers (converted), Identity in between
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Add", ["b", "m"], ["a"]),
             helper.make_node("Identity", ["a"], ["y"])]
    inits = [numpy_helper.from_array(np.ones((3, 2)), "w"),
             numpy_helper.from_array(np.array([0.5, -1], np.float16), "b")]
    model = nox.load(_write(tmp_path, _model_proto(nodes, inits)))
    np.testing.assert_allclose(model.predict(np.ones((2, 3), F32)), [[3.5, 2.0]] * 2)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense"]


EXTRA_DATA = np.arange(6, dtype=F32).reshape(3, 2)


def _external(tmp_path, location, length=None, offset=0):
    t = numpy_helper.from_array(EXTRA_DATA, "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        t.external_data.add(key=key, value=value)
    nodes, _ = _gemm()
    return _write(tmp_path, _model_proto(nodes, [t]))


def test_external_data_only_when_allowed_and_only_inside_the_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(EXTRA_DATA.tobytes())
    (tmp_path / "secret.bin").write_bytes(EXTRA_DATA.tobytes())
    os.symlink(tmp_path / "secret.bin", folder / "link.bin")
    path = _external(folder, "w.bin", 24)
    with pytest.raises(FormatError, match="external file.*allow_external_data=True"):
        nox.load(path)
    model = nox.load(path, allow_external_data=True)
    np.testing.assert_array_equal(model.layers[0].weight, EXTRA_DATA)
    for location, length, offset, match in [
            ("../secret.bin", 24, 0, "outside the model's folder"),
            (str(tmp_path / "secret.bin"), 24, 0, "relative"),
            ("link.bin", 24, 0, "outside the model's folder"),
            ("w.bin", 28, 0, "need 24 bytes"),
            ("w.bin", None, 8, "has 24 bytes, the tensor needs 24 from offset 8"),
            ("missing.bin", None, 0, "cannot read external data"),
            (".", 24, 0, "outside the model's folder|not a regular file"),
            ("", 24, 0, "relative")]:
        with pytest.raises(FormatError, match=match):
            nox.load(_external(folder, location, length, offset), allow_external_data=True)


def _hostile_cases():
    """(id, proto factory, expected message): one per kind of bad file."""
    def raw(dims, data, dtype=TensorProto.FLOAT):
        # built by hand: onnx.helper refuses inconsistent tensors, a file need not
        return TensorProto(name="w", data_type=dtype, dims=dims, raw_data=data)

    def gemm_with(w_tensor):
        return _model_proto([helper.make_node("Gemm", ["x", "w"], ["y"])], [w_tensor])

    nan_w = np.ones((3, 2), F32)
    nan_w[1, 1] = np.nan
    node = helper.make_node
    return [
        ("short raw data", lambda: gemm_with(raw([3, 2], b"\0" * 20)), "need 24 bytes"),
        ("huge dims", lambda: gemm_with(raw([1 << 30, 1 << 30], b"\0" * 24)), "dims"),
        ("huge claimed count", lambda: gemm_with(raw([1 << 20, 1 << 20], b"\0" * 24)),
         "need 4398046511104 bytes"),
        ("negative dims", lambda: gemm_with(raw([-1, 2], b"")), "dims"),
        ("float_data count", lambda: gemm_with(TensorProto(
            name="w", data_type=TensorProto.FLOAT, dims=[3, 2], float_data=[1.0] * 5)),
         "need 6 values"),
        ("int8 weights", lambda: gemm_with(helper.make_tensor("w", TensorProto.INT8, [3, 2],
                                                              [1] * 6)), "has type int8"),
        ("NaN weights", lambda: _model_proto(*_gemm(nan_w)), "NaN"),
        ("float64 beyond float32", lambda: _model_proto(*_gemm(np.full((3, 2), 1e300))),
         "infinity"),
        ("unsupported op", lambda: _model_proto([node("Sin", ["x"], ["y"])], []),
         r"node 0 \(Sin\): operator not supported"),
        ("custom domain", lambda: _model_proto([node("Relu", ["x"], ["y"], domain="evil")],
                                               []), "domain 'evil'"),
        ("unknown attribute", lambda: _model_proto([node("Relu", ["x"], ["y"], foo=1)], []),
         "attribute 'foo'"),
        ("gemm 3-d weight", lambda: _model_proto(*_gemm(np.ones((3, 2, 1), F32))),
         "expected a matrix"),
        ("gemm wrong in", lambda: _model_proto(*_gemm(np.ones((4, 2), F32))),
         r"samples of shape \(3,\) by a 4 x 2"),
        ("gemm bias length", lambda: _model_proto(*_gemm(b=np.ones(3, F32))), "bias of shape"),
        ("gemm transA", lambda: _model_proto([node("Gemm", ["x", "w"], ["y"], transA=1)],
                                             _gemm()[1]), "transA"),
        ("weight not constant", lambda: _model_proto(
            [node("Gemm", ["x", "w"], ["y"])], [], extra_inputs=[
                helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2])]),
         "one input and one output"),
        ("conv asymmetric pads", lambda: _model_proto(
            [node("Conv", ["x", "w"], ["y"], pads=[0, 0, 1, 1])],
            [numpy_helper.from_array(np.ones((2, 1, 3, 3), F32), "w")], shape=(1, 5, 5)),
         "not symmetric"),
        ("conv on vectors", lambda: _model_proto(
            [node("Conv", ["x", "w"], ["y"])],
            [numpy_helper.from_array(np.ones((2, 1, 3, 3), F32), "w")]), "NCHW"),
        ("conv channels", lambda: _model_proto(
            [node("Conv", ["x", "w"], ["y"])],
            [numpy_helper.from_array(np.ones((2, 1, 3, 3), F32), "w")], shape=(3, 5, 5)),
         "does not take"),
        ("pool ceil_mode", lambda: _model_proto(
            [node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], ceil_mode=1)], [],
            shape=(1, 5, 5)), "ceil_mode"),
        ("pool huge kernel", lambda: _model_proto(
            [node("MaxPool", ["x"], ["y"], kernel_shape=[1 << 40, 2])], [], shape=(1, 5, 5)),
         "out of range"),
        ("avgpool exclude pad", lambda: _model_proto(
            [node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])], [],
            shape=(1, 5, 5)), "count_include_pad"),
        ("global pool unflattened", lambda: _model_proto(
            [node("GlobalAveragePool", ["x"], ["y"])], [], shape=(2, 3, 3)), "Flatten"),
        ("bn negative variance", lambda: _model_proto(
            [node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
            [numpy_helper.from_array(np.array(a, F32), n) for n, a in
             (("s", [1, 1, 1]), ("b", [0, 0, 0]), ("m", [0, 0, 0]), ("v", [1, -1, 1]))]),
         "negative running variance"),
        ("bn lengths", lambda: _model_proto(
            [node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
            [numpy_helper.from_array(np.ones(n, F32), name) for name, n in
             (("s", 3), ("b", 3), ("m", 2), ("v", 3))]), "one length"),
        ("softmax axis", lambda: _model_proto([node("Softmax", ["x"], ["y"], axis=1)], [],
                                              shape=(3, 4)), "last axis"),
        ("gelu tanh", lambda: _model_proto([node("Gelu", ["x"], ["y"], approximate="tanh")], [],
                                           opset=20), "exact GELU"),
        ("reshape not flatten", lambda: _model_proto(
            [node("Reshape", ["x", "s"], ["y"])],
            [numpy_helper.from_array(np.array([-1, 2], np.int64), "s")], shape=(2, 3)),
         "flattening"),
        ("dropout training", lambda: _model_proto(
            [node("Dropout", ["x", "r", "t"], ["y"])],
            [numpy_helper.from_array(np.array(0.5, F32), "r"),
             numpy_helper.from_array(np.array(True), "t")]), "training_mode"),
        ("dropout mask used", lambda: _model_proto(
            [node("Dropout", ["x"], ["d", "mask"]), node("Relu", ["mask"], ["y"])], []),
         "second output"),
        ("fork not joined", lambda: _model_proto(
            [node("Relu", ["x"], ["a"]), node("Tanh", ["x"], ["y"])], []),
         "leads nowhere|do not end in one Add"),
        ("fork into two adds", lambda: _model_proto(
            [node("Relu", ["x"], ["a"]), node("Tanh", ["x"], ["b"]),
             node("Add", ["a", "x"], ["c"]), node("Add", ["b", "c"], ["y"])], []),
         "feeds 3 nodes"),
        ("add of one tensor", lambda: _model_proto([node("Add", ["x", "x"], ["y"])], []),
         "does not branch"),
        ("dead end", lambda: _model_proto([node("Relu", ["x"], ["a"])], []), "leads nowhere"),
        ("side node", lambda: _model_proto([node("Relu", ["x"], ["y"]),
                                            node("Relu", ["z"], ["q"])], []), "not on the chain"),
        ("cycle", lambda: _model_proto([node("Relu", ["x"], ["a"]), node("Add", ["a", "c"], ["b"]),
                                        node("Relu", ["b"], ["c"]),
                                        node("Identity", ["c"], ["y"])], []),
         "does not branch|not a chain"),
        ("unreachable cycle", lambda: _model_proto([node("Relu", ["x"], ["y"]),
                                                    node("Relu", ["c"], ["d"]),
                                                    node("Relu", ["d"], ["c"])], []),
         "not on the chain"),
        ("duplicate output", lambda: _model_proto([node("Relu", ["x"], ["y"]),
                                                   node("Tanh", ["x"], ["y"])], []),
         "already defines"),
        ("old opset", lambda: _model_proto([node("Relu", ["x"], ["y"])], [], opset=11),
         "operator set 11"),
        ("int input", lambda: _int_input(), "float32 tensor"),
        ("huge input dim", lambda: _model_proto([node("Relu", ["x"], ["y"])], [],
                                                shape=(1 << 40,)), "dimension"),
        ("rank-1 input", lambda: _model_proto([node("Relu", ["x"], ["y"])], [], shape=()),
         "expected"),
        ("no graph", lambda: onnx.ModelProto(ir_version=8), "no graph"),
    ]


def _int_input():
    proto = _model_proto([helper.make_node("Relu", ["x"], ["y"])], [])
    proto.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    return proto


@pytest.mark.parametrize("name,make,match", _hostile_cases(),
                         ids=[c[0] for c in _hostile_cases()])
def test_hostile_files_raise_format_error(name, make, match, tmp_path):
    path = _write(tmp_path, make())
    with pytest.raises(FormatError, match=match) as info:
        nox.load(path)
    assert str(path) in str(info.value)


def test_not_onnx_files(tmp_path):
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(3, 2))
    nn.save(model, tmp_path / "m.nnc")
    with pytest.raises(FormatError, match="nncore.load"):
        nox.load(tmp_path / "m.nnc")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        nox.load(tmp_path / "empty.onnx")
    nox.export(model, tmp_path / "ok.onnx")
    data = (tmp_path / "ok.onnx").read_bytes()
    for cut in (1, 7, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.onnx").write_bytes(data[:cut])
        with pytest.raises(FormatError):
            nox.load(tmp_path / "cut.onnx")
    with pytest.raises(FileNotFoundError):
        nox.load(tmp_path / "missing.onnx")


def test_load_leaves_the_seeded_generator_alone(tmp_path):
    nn.manual_seed(0)
    nox.export(nn.models.small_cnn(image_size=8), tmp_path / "m.onnx", input_shape=(1, 8, 8))
    nn.manual_seed(3)
    expected = nn.Dense(4, 4).weight.copy()
    nn.manual_seed(3)
    nox.load(tmp_path / "m.onnx")
    np.testing.assert_array_equal(nn.Dense(4, 4).weight, expected)


# ---------------------------------------------------------------- fuzzing

# NNCORE_FUZZ_SCALE=k: k times the examples from a random seed (as tests/test_fuzz.py)
SCALE = max(1, int(os.environ.get("NNCORE_FUZZ_SCALE", "1")))
FUZZ = settings(deadline=None, database=None, derandomize=SCALE == 1, max_examples=60 * SCALE,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _fuzz_model():
    nn.manual_seed(0)
    return _randomize_bn(nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 1), nn.GELU())), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dense(8, 3, activation="softmax")))


FUZZ_SHAPE = (1, 4, 4)


def _check_loaded(path, X):
    """A mutated file either is refused with FormatError or gives a model
    that predicts (or refuses the input with a clean ValueError); when
    onnxruntime also runs it, both agree."""
    try:
        model = nox.load(path)
    except FormatError:
        return
    try:
        out = model.predict(X)
    except ValueError:
        return
    try:
        ref = _ort(path, X)
    except Exception:      # onnxruntime may refuse what nncore reads: fine
        return
    if ref.shape == out.shape and np.isfinite(ref).all() and np.isfinite(out).all():
        _close(out, ref, 1e-4)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_bytes(tmp_path, data):
    path = tmp_path / "f.onnx"
    nox.export(_fuzz_model(), path, input_shape=FUZZ_SHAPE)
    raw = bytearray(path.read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i + data.draw(st.integers(0, 20))] = data.draw(st.binary(max_size=40))
    path.write_bytes(bytes(raw))
    _check_loaded(path, np.ones((2,) + FUZZ_SHAPE, F32))


def _mutate_proto(proto, data):
    """Change one field of the graph: a dim, an attribute, an op type, an
    input name, a data type, an initializer's bytes."""
    g = proto.graph
    what = data.draw(st.sampled_from(["dim", "attr", "op", "input", "dtype", "bytes", "drop"]))
    big = st.one_of(st.integers(-3, 8), st.sampled_from([0, 1 << 31, 1 << 40, -(1 << 62)]))
    if what == "dim":
        t = data.draw(st.sampled_from(list(g.initializer)))
        if t.dims:
            t.dims[data.draw(st.integers(0, len(t.dims) - 1))] = data.draw(big)
        else:
            t.dims.append(data.draw(big))
    elif what == "attr":
        nodes = [n for n in g.node if n.attribute]
        a = data.draw(st.sampled_from(nodes)).attribute
        a = a[data.draw(st.integers(0, len(a) - 1))]
        if a.ints:
            a.ints[data.draw(st.integers(0, len(a.ints) - 1))] = data.draw(big)
        elif a.type == onnx.AttributeProto.INT:
            a.i = data.draw(big)
        else:
            a.f = data.draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
    elif what == "op":
        n = data.draw(st.sampled_from(list(g.node)))
        n.op_type = data.draw(st.sampled_from(["Relu", "Add", "Gemm", "Conv", "Flatten",
                                               "Identity", "Reshape", "Sin", ""]))
    elif what == "input":
        n = data.draw(st.sampled_from(list(g.node)))
        if n.input:
            names = [n2.output[0] for n2 in g.node] + [t.name for t in g.initializer] + ["x"]
            n.input[data.draw(st.integers(0, len(n.input) - 1))] = data.draw(
                st.sampled_from(names))
    elif what == "dtype":
        t = data.draw(st.sampled_from(list(g.initializer)))
        t.data_type = data.draw(st.integers(0, 17))
    elif what == "bytes":
        t = data.draw(st.sampled_from(list(g.initializer)))
        t.raw_data = data.draw(st.binary(max_size=64))
    else:
        del g.node[data.draw(st.integers(0, len(g.node) - 1))]


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_graphs(tmp_path, data):
    proto = nox.to_model_proto(_fuzz_model(), input_shape=FUZZ_SHAPE)
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate_proto(proto, data)
    path = tmp_path / "g.onnx"
    path.write_bytes(proto.SerializeToString())
    _check_loaded(path, np.ones((2,) + FUZZ_SHAPE, F32))


# ---------------------------------------------------------------- from PyTorch

def _from_torch(name, dynamo, tmp_path):
    torch = pytest.importorskip("torch")
    net, X, path = export_torch(name, dynamo, tmp_path)
    model = nox.load(path, allow_external_data=dynamo)
    with torch.inference_mode():
        for batch in (1, 3):
            _close(model.predict(X[:batch].numpy()), net(X[:batch]).numpy().astype(np.float64))


def test_pytorch_legacy_export_loads(tmp_path):
    _from_torch("mlp", False, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name,dynamo", [("small_cnn", False), ("resnet20", False), ("mlp", True),
                                         ("small_cnn", True), ("resnet20", True)])
def test_pytorch_export_loads(name, dynamo, tmp_path):
    _from_torch(name, dynamo, tmp_path)
