"""Bad input to every public function and class, as tables.

Each row of ``REJECTED`` is a call that must raise ValueError, TypeError or
MemoryError (never crash, never an OOM kill, never another exception type)
with a message naming what was wrong. ``CONVERTED`` lists usable inputs (int,
bool, float64, Fortran order, strided, broadcast, read-only, misaligned) that
must give exactly what the float32 C-contiguous input gives.
"""
import math
import os

import numpy as np
import pytest

import nncore as nn
from nncore import _guard, callbacks as cb, datasets
from nncore.errors import FormatError

pytestmark = pytest.mark.filterwarnings("ignore:.*reached max_iter")

F32 = np.float32
HUGE = 10**6          # 10**6 x 10**6 float32 is 3.6 TiB: more than any test machine


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(F32)


def mlp(n_in=4, n_out=3, hidden=8):
    nn.manual_seed(0)
    return nn.Sequential(nn.Dense(n_in, hidden), nn.ReLU(), nn.Dense(hidden, n_out))


def trainer(loss=None, n_out=3, **kw):
    return nn.Trainer(mlp(n_out=n_out), loss or nn.CrossEntropyLoss(), nn.SGD(0.1), **kw)


X = f32(20, 4)
Y = np.arange(20) % 3


def fit(X=X, y=Y, loss=None, n_out=3, trainer_kw=None, **kw):
    kw.setdefault("verbose", 0)
    return trainer(loss, n_out, **(trainer_kw or {})).fit(X, y, 1, **kw)


def misaligned(shape, dtype=F32):
    """A C-contiguous array whose data starts one byte past an aligned address."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(n + 1, np.uint8)[1:]
    arr = raw.view(dtype).reshape(shape)
    assert not arr.flags.aligned and arr.flags.c_contiguous
    return arr


def readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def forward_of(layer, x):
    return layer.forward(x)


def backward_after_forward(layer, x, grad):
    layer.forward(x)
    return layer.backward(grad)


def loss_of(loss, pred, target):
    return loss.forward(pred, target)


def opt_step(opt, pairs):
    return opt.step(pairs)


ESTIMATOR = dict(hidden_layer_sizes=(5,), max_iter=2)


def clf(**kw):
    return nn.NNClassifier(**{**ESTIMATOR, **kw})


def reg(**kw):
    return nn.NNRegressor(**{**ESTIMATOR, **kw})


def fitted_clf():
    return clf().fit(X, Y)


def archive(path, meta, tensors=None):
    from nncore.io import write_archive
    write_archive(path, meta, tensors or {})
    return path


R = pytest.param
VE, TE, ME = ValueError, TypeError, MemoryError

REJECTED = [
    # ---- matmul ----
    R(lambda: nn.matmul(X.astype(complex), f32(4, 2)), TE, "matmul: a has dtype complex", id="matmul-complex"),
    R(lambda: nn.matmul(np.array([[None]]), f32(1, 2)), TE, "matmul: a has dtype object", id="matmul-object"),
    R(lambda: nn.matmul(X.astype(str), f32(4, 2)), TE, "matmul: a has dtype <U", id="matmul-str"),
    R(lambda: nn.matmul([[1, 2], [1]], f32(2, 2)), TE, "matmul: a must be an array", id="matmul-ragged"),
    R(lambda: nn.matmul(f32(4), f32(4, 2)), VE, r"matmul: a must be 2-D, got shape \(4,\)", id="matmul-1d"),
    R(lambda: nn.matmul(f32(2, 3, 4), f32(4, 2)), VE, "matmul: a must be 2-D", id="matmul-3d"),
    R(lambda: nn.matmul(3.0, f32(4, 2)), VE, r"matmul: a must be 2-D, got shape \(\)", id="matmul-scalar"),
    R(lambda: nn.matmul(X, f32(5, 2)), VE, "do not align: 4 != 5", id="matmul-k-mismatch"),
    R(lambda: nn.matmul(X, f32(4, 2), trans_a="yes"), TE, "trans_a must be True or False", id="matmul-trans-str"),
    R(lambda: nn.matmul(X, f32(4, 2), alpha="2"), TE, "alpha must be a real number", id="matmul-alpha-str"),
    R(lambda: nn.matmul(X, f32(4, 2), alpha=1j), TE, "alpha must be a real number", id="matmul-alpha-complex"),
    R(lambda: nn.matmul(X, f32(4, 2), alpha=1e300), VE, "alpha must be finite in float32", id="matmul-alpha-huge"),
    R(lambda: nn.matmul(X, f32(4, 2), beta=math.nan, out=np.zeros((20, 2), F32)), VE, "beta must be finite", id="matmul-beta-nan"),
    R(lambda: nn.matmul(X, f32(4, 2), beta=1.0), VE, "beta != 0 needs an `out`", id="matmul-beta-no-out"),
    R(lambda: nn.matmul(X, f32(4, 2), activation="tanh"), VE, "unknown activation 'tanh'", id="matmul-activation"),
    R(lambda: nn.matmul(X, f32(4, 2), activation=[]), VE, r"unknown activation \[\]", id="matmul-activation-list"),
    R(lambda: nn.matmul(X, f32(4, 2), bias=np.zeros(3)), VE, r"bias has shape \(3,\), expected \(2,\)", id="matmul-bias-shape"),
    R(lambda: nn.matmul(X, f32(4, 2), bias=np.zeros(2, complex)), TE, "bias has dtype complex", id="matmul-bias-complex"),
    R(lambda: nn.matmul(X, f32(4, 2), bias="ab"), TE, "bias has dtype <U", id="matmul-bias-str"),
    R(lambda: nn.matmul(X, f32(4, 2), out=np.zeros((20, 2))), TE, "out must be a float32", id="matmul-out-float64"),
    R(lambda: nn.matmul(X, f32(4, 2), out=[[0.0] * 2] * 20), TE, "out must be a float32", id="matmul-out-list"),
    R(lambda: nn.matmul(X, f32(4, 2), out=np.zeros((20, 3), F32)), VE, r"out has shape \(20, 3\)", id="matmul-out-shape"),
    R(lambda: nn.matmul(X, f32(4, 2), out=np.zeros((2, 20), F32).T), VE, "out must be C-contiguous", id="matmul-out-fortran"),
    R(lambda: nn.matmul(X, f32(4, 2), out=readonly(np.zeros((20, 2), F32))), VE, "writable", id="matmul-out-readonly"),
    R(lambda: nn.matmul(X, f32(4, 2), out=np.broadcast_to(np.zeros(2, F32), (20, 2))), VE, "writable", id="matmul-out-broadcast"),
    R(lambda: nn.matmul(X, f32(4, 2), out=misaligned((20, 2))), VE, "aligned", id="matmul-out-misaligned"),
    R(lambda: (lambda a: nn.matmul(a, a, out=a))(f32(4, 4)), VE, "out overlaps a", id="matmul-out-is-a"),
    R(lambda: (lambda a: nn.matmul(f32(4, 4), a[:4], out=a[3:7]))(f32(8, 4)), VE, "out overlaps b", id="matmul-out-overlaps-b"),
    R(lambda: (lambda a: nn.matmul(f32(1, 4), f32(4, 4), bias=a[0], out=a))(f32(1, 4)), VE, "out overlaps bias", id="matmul-out-overlaps-bias"),
    R(lambda: nn.matmul(np.ones((HUGE, 1), F32), np.ones((1, HUGE), F32)), ME, r"matmul: the \(1000000, 1000000\) float32 output needs", id="matmul-huge-output"),
    R(lambda: nn.matmul(np.broadcast_to(F32(1), (HUGE, HUGE)), np.ones((HUGE, 1), F32)), ME, "matmul: a float32 copy of a needs", id="matmul-huge-broadcast-input"),
    # ---- layers: construction ----
    R(lambda: nn.Dense(0, 3), VE, "in_features must be a positive int, got 0", id="dense-zero"),
    R(lambda: nn.Dense(3.0, 3), VE, "in_features must be a positive int, got 3.0", id="dense-float-size"),
    R(lambda: nn.Dense("3", 3), VE, "in_features must be a positive int", id="dense-str-size"),
    R(lambda: nn.Dense(True, 3), VE, "in_features must be a positive int", id="dense-bool-size"),
    R(lambda: nn.Dense(3, 3, activation="swish"), VE, "unknown activation 'swish'", id="dense-activation"),
    R(lambda: nn.Dense(3, 3, activation=[]), VE, "unknown activation", id="dense-activation-list"),
    R(lambda: nn.Dense(3, 3, init="nope"), VE, "unknown init 'nope'", id="dense-init-name"),
    R(lambda: nn.Dense(3, 3, init=[]), VE, "unknown init", id="dense-init-list"),
    R(lambda: nn.Dense(3, 3, bias=0), TE, "bias must be True or False", id="dense-bias-int"),
    R(lambda: nn.Dense(3, 4, init=lambda i, o, r: np.zeros((2, 2))).weight, VE, r"init returned shape \(2, 2\)", id="dense-init-shape"),
    R(lambda: nn.Dense(3, 4, init=lambda i, o, r: np.full((3, 4), np.nan)).weight, VE, "NaN or infinity", id="dense-init-nan"),
    R(lambda: nn.Dense(3, 4, init=lambda i, o, r: np.full((3, 4), "a")).weight, TE, "init returned dtype", id="dense-init-str"),
    R(lambda: nn.Dense(HUGE, HUGE), ME, r"Dense\(1000000->1000000\): its 1000000 x 1000000 weights need", id="dense-huge"),
    R(lambda: nn.LeakyReLU("0.1"), VE, "negative_slope must be a finite number", id="leaky-str"),
    R(lambda: nn.LeakyReLU(math.inf), VE, "negative_slope must be a finite number", id="leaky-inf"),
    R(lambda: nn.Dropout(1.0), VE, r"p must be a number in \[0, 1\)", id="dropout-one"),
    R(lambda: nn.Dropout(math.nan), VE, "p must be a number", id="dropout-nan"),
    R(lambda: nn.Dropout("0.5"), VE, "p must be a number", id="dropout-str"),
    R(lambda: nn.Sequential([nn.ReLU()]), TE, r"Sequential\(\*layers\)", id="sequential-list"),
    R(lambda: nn.Sequential(nn.Dense(2, 2), 3), TE, "argument 1 is a int", id="sequential-int"),
    R(lambda: (lambda d: nn.Sequential(d, d))(nn.Dense(2, 2)), VE, "appears twice", id="sequential-duplicate"),
    R(lambda: nn.layer_from_config({"type": "Conv3d"}), VE, "unknown layer type 'Conv3d'", id="config-type"),
    R(lambda: nn.layer_from_config({"type": "Dense", "in_features": 3, "out_features": 3, "activation": {}}), VE, "unknown activation", id="config-activation-dict"),
    R(lambda: nn.layer_from_config({"type": "Dense", "in_features": HUGE, "out_features": HUGE}), ME, "weights need", id="config-huge"),
    R(lambda: nn.layer_from_config({"type": "Dropout", "q": 0.5}), VE, "bad config for Dropout", id="config-key"),
    R(lambda: nn.layer_from_config([]), VE, "must be a dict", id="config-list"),
    R(lambda: nn.register_layer(3), TE, "expected a Layer subclass", id="register-int"),
    # ---- layers: forward / backward input ----
    R(lambda: forward_of(nn.Dense(4, 3), X.astype(complex)), TE, r"Dense\(4->3\): input must hold real numbers, got dtype complex", id="dense-fwd-complex"),
    R(lambda: forward_of(nn.Dense(4, 3), np.full((2, 4), None)), TE, "got dtype object", id="dense-fwd-object"),
    R(lambda: forward_of(nn.Dense(4, 3), X.astype(str)), TE, "got dtype <U", id="dense-fwd-str"),
    R(lambda: forward_of(nn.Dense(4, 3), [[1, 2, 3, 4], [1]]), TE, r"Dense\(4->3\): input must be an array", id="dense-fwd-ragged"),
    R(lambda: forward_of(nn.Dense(4, 3), None), TE, r"Dense\(4->3\)", id="dense-fwd-none"),
    R(lambda: forward_of(nn.Dense(4, 3), f32(4)), VE, r"must be 2-D \(batch, features\), got shape \(4,\) \(use x.reshape\(1, -1\)", id="dense-fwd-1d"),
    R(lambda: forward_of(nn.Dense(4, 3), f32(1, 2, 4)), VE, "must be 2-D", id="dense-fwd-3d"),
    R(lambda: forward_of(nn.Dense(4, 3), f32(2, 5)), VE, r"Dense\(4->3\): input has 5 features, expected 4", id="dense-fwd-features"),
    R(lambda: forward_of(nn.Dense(4, 3), f32(0, 4)), VE, r"empty batch \(0 rows\)", id="dense-fwd-empty"),
    R(lambda: forward_of(nn.ReLU(), f32(0, 4)), VE, r"ReLU\(\): input is an empty batch", id="relu-fwd-empty"),
    R(lambda: forward_of(nn.Softmax(), X.astype(complex)), TE, r"Softmax\(\): input must hold real numbers", id="softmax-fwd-complex"),
    R(lambda: forward_of(nn.Dropout(0.5), f32(4)), VE, r"Dropout\(p=0.5\): input must be 2-D", id="dropout-fwd-1d"),
    R(lambda: nn.Dense(4, 3).backward(f32(2, 3)), VE, "backward\\(\\) called before forward\\(\\)", id="dense-bwd-first"),
    R(lambda: nn.Tanh().backward(f32(2, 3)), VE, "before forward", id="tanh-bwd-first"),
    R(lambda: nn.Dropout(0.2).backward(f32(2, 3)), VE, "before forward", id="dropout-bwd-first"),
    R(lambda: backward_after_forward(nn.Dense(4, 3), X, f32(20, 4)), VE, r"gradient has shape \(20, 4\), expected \(20, 3\)", id="dense-bwd-shape"),
    R(lambda: backward_after_forward(nn.Sigmoid(), X, np.ones((20, 4), complex)), TE, "gradient must hold real numbers", id="sigmoid-bwd-complex"),
    R(lambda: backward_after_forward(nn.GELU(), X, "grad"), TE, "gradient must hold real numbers", id="gelu-bwd-str"),
    R(lambda: setattr(nn.Dense(4, 3), "weight", np.ones((3, 4))), VE, r"weight has shape \(3, 4\), expected \(4, 3\)", id="dense-set-weight-shape"),
    R(lambda: setattr(nn.Dense(4, 3), "weight", np.full((4, 3), np.inf)), VE, "weight holds NaN or infinity", id="dense-set-weight-inf"),
    R(lambda: setattr(nn.Dense(4, 3), "bias", np.ones(3, complex)), TE, "bias must hold real numbers", id="dense-set-bias-complex"),
    R(lambda: setattr(nn.Dense(4, 3, bias=False), "bias", np.ones(3)), VE, r"has no bias \(bias=False\)", id="dense-set-bias-none"),
    R(lambda: mlp().predict(X, batch_size=0), VE, "batch_size must be a positive int, got 0", id="predict-batch-zero"),
    R(lambda: mlp().predict(X, batch_size=2.0), VE, "batch_size must be a positive int", id="predict-batch-float"),
    R(lambda: mlp().predict(f32(0, 4)), VE, "X is an empty batch", id="predict-empty"),
    R(lambda: mlp().predict(f32(3, 5)), VE, "input has 5 features, expected 4", id="predict-features"),
    R(lambda: mlp().predict_proba(X.astype(complex)), TE, "X must hold real numbers", id="predict-proba-complex"),
    R(lambda: nn.Sequential(nn.Dense(2, 10**5)).forward(np.broadcast_to(F32(1), (10**7, 2))), ME, r"Dense\(2->100000\): a \(10000000, 100000\) float32 buffer needs", id="forward-huge-buffer"),
    R(lambda: nn.Sequential(nn.Dense(2, 10**5)).predict(np.broadcast_to(F32(1), (10**8, 2)), batch_size=10**8), ME, "buffer needs", id="predict-huge-batch"),
    R(lambda: mlp().load_state_dict([]), TE, "expected a mapping", id="state-dict-list"),
    R(lambda: mlp().load_state_dict({"0.weight": 1}), VE, "missing keys", id="state-dict-keys"),
    R(lambda: mlp().load_state_dict({**mlp().state_dict(), "0.bias": np.full(8, np.nan)}), VE, "0.bias holds NaN", id="state-dict-nan"),
    R(lambda: mlp().load_state_dict({**mlp().state_dict(), "0.bias": "a" * 8}), TE, "0.bias has dtype", id="state-dict-str"),
    R(lambda: mlp().load_state_dict({**mlp().state_dict(), "2.weight": np.ones((3, 8))}), VE, r"2.weight has shape \(3, 8\), expected \(8, 3\)", id="state-dict-shape"),
    # ---- losses ----
    R(lambda: loss_of(nn.MSELoss(), X.astype(complex), X), TE, "MSELoss: pred must hold real numbers", id="mse-pred-complex"),
    R(lambda: loss_of(nn.MSELoss(), [[1, 2], [1]], X), TE, "MSELoss: pred must be an array", id="mse-pred-ragged"),
    R(lambda: loss_of(nn.MSELoss(), f32(0, 4), f32(0, 4)), VE, "MSELoss: pred is empty", id="mse-pred-empty"),
    R(lambda: loss_of(nn.MSELoss(), f32(2, 3, 4), f32(2, 3, 4)), VE, "must be 2-D", id="mse-pred-3d"),
    R(lambda: loss_of(nn.MSELoss(), X, X[:5]), VE, r"MSELoss: target has shape \(5, 4\), expected \(20, 4\)", id="mse-target-shape"),
    R(lambda: loss_of(nn.HuberLoss(), X, np.full((20, 4), None)), TE, "HuberLoss: target must hold real numbers", id="huber-target-object"),
    R(lambda: loss_of(nn.BCEWithLogitsLoss(), X, "x"), TE, "BCEWithLogitsLoss: target must hold real numbers", id="bce-target-str"),
    R(lambda: loss_of(nn.CrossEntropyLoss(), X[:, :3], Y + 1), VE, r"label 3 at index 2 is outside \[0, 3\)", id="ce-label-high"),
    R(lambda: loss_of(nn.CrossEntropyLoss(), X[:, :3], Y - 1), VE, r"label -1 at index 0 is outside", id="ce-label-negative"),
    R(lambda: loss_of(nn.CrossEntropyLoss(), X[:, :3], np.full(20, 2**64 - 1, np.uint64)), VE, "label 18446744073709551615", id="ce-label-uint64"),
    R(lambda: loss_of(nn.CrossEntropyLoss(), X[:, :3], Y.astype(float)), TE, "integer class labels, got dtype float64", id="ce-label-float"),
    R(lambda: loss_of(nn.CrossEntropyLoss(), X[:, :3], Y[:5]), VE, r"target has shape \(5,\), expected \(20,\)", id="ce-label-count"),
    R(lambda: loss_of(nn.CrossEntropyLoss(), f32(20, 0), Y), VE, "pred has 0 classes", id="ce-no-classes"),
    R(lambda: nn.MSELoss().backward(), VE, "MSELoss: backward\\(\\) called before forward", id="loss-bwd-first"),
    R(lambda: nn.HuberLoss(0), VE, "delta must be a positive finite number, got 0", id="huber-delta-zero"),
    R(lambda: nn.HuberLoss(math.inf), VE, "delta must be a positive finite", id="huber-delta-inf"),
    R(lambda: nn.HuberLoss("1"), VE, "delta must be a positive finite", id="huber-delta-str"),
    # ---- optimizers ----
    R(lambda: nn.SGD(-0.1), VE, "SGD: lr must be >= 0, got -0.1", id="sgd-lr-negative"),
    R(lambda: nn.SGD(math.nan), VE, "SGD: lr must be a number, got nan", id="sgd-lr-nan"),
    R(lambda: nn.SGD("0.1"), VE, "SGD: lr must be a number", id="sgd-lr-str"),
    R(lambda: nn.SGD(1e300), VE, "SGD: lr must be finite in float32", id="sgd-lr-beyond-float32"),
    R(lambda: nn.SGD(0.1, momentum=-1), VE, "momentum must be >= 0", id="sgd-momentum"),
    R(lambda: nn.SGD(0.1, nesterov=True), VE, "Nesterov momentum needs momentum > 0", id="sgd-nesterov"),
    R(lambda: nn.Adam(betas=(1.0, 0.9)), VE, r"beta1 must be in \[0, 1\)", id="adam-beta1"),
    R(lambda: nn.Adam(betas=0.9), VE, "betas must be a pair", id="adam-betas-scalar"),
    R(lambda: nn.Adam(eps=1e39), VE, "eps must be finite in float32", id="adam-eps-huge"),
    R(lambda: nn.AdamW(weight_decay=math.inf), VE, "weight_decay must be finite", id="adamw-decay-inf"),
    R(lambda: nn.RMSprop(alpha=1.5), VE, r"alpha must be in \[0, 1\]", id="rmsprop-alpha"),
    R(lambda: setattr(nn.SGD(0.1), "lr", -1), VE, "lr must be >= 0", id="sgd-set-lr"),
    R(lambda: opt_step(nn.SGD(0.1), None), TE, r"SGD.step: expected a list of \(param, grad\) pairs", id="step-none"),
    R(lambda: opt_step(nn.SGD(0.1), [f32(3)]), TE, "expected \\(param, grad\\) pairs", id="step-not-pairs"),
    R(lambda: opt_step(nn.SGD(0.1), [(np.ones(3), f32(3))]), TE, "param 0 must be a float32 C-contiguous array", id="step-float64-param"),
    R(lambda: opt_step(nn.SGD(0.1), [(f32(6)[::2], f32(3))]), TE, "param 0 must be a float32 C-contiguous", id="step-strided-param"),
    R(lambda: opt_step(nn.SGD(0.1), [(readonly(f32(3)), f32(3))]), VE, "param 0 is read-only", id="step-readonly-param"),
    R(lambda: opt_step(nn.SGD(0.1), [(f32(3), f32(4))]), VE, r"grad 0 has shape \(4,\), param \(3,\)", id="step-grad-shape"),
    R(lambda: (lambda o, p: (o.step([(p, f32(3))]), o.step([(p, f32(5))])))(nn.Adam(), f32(3)), VE, "Adam.step: pair 0: .*5 elements, expected 3", id="step-grad-swapped"),
    R(lambda: nn.SGD(0.1).state_dict(None), TE, r"SGD.state_dict: expected a list of \(param, grad\) pairs", id="state-dict-none"),
    R(lambda: nn.SGD(0.1).load_state_dict({}, []), VE, "SGD.load_state_dict: expected a dict with keys", id="load-state-dict-empty"),
    R(lambda: nn.Adam().load_state_dict(nn.SGD(0.1).state_dict([]), []), VE, "the state is of a 'SGD', not a 'Adam'", id="load-state-dict-type"),
    R(lambda: nn.SGD(0.1).load_state_dict(nn.SGD(0.1).state_dict([]), [(f32(3), f32(3))]), VE, "steps must be a list of 1 ints", id="load-state-dict-count"),
    # ---- threads and seeds ----
    R(lambda: nn.set_num_threads(0), VE, r"n must be in \[1, 1024\], got 0", id="threads-zero"),
    R(lambda: nn.set_num_threads(10**6), VE, "got 1000000", id="threads-absurd"),
    R(lambda: nn.set_num_threads(10**30), VE, "got 1000000000000000000000000000000", id="threads-overflow"),
    R(lambda: nn.set_num_threads(1.5), TE, "n must be an int", id="threads-float"),
    R(lambda: nn.manual_seed(-1), VE, "seed must be >= 0", id="seed-negative"),
    R(lambda: nn.manual_seed(1.5), TE, "seed must be an int", id="seed-float"),
    # ---- Trainer ----
    R(lambda: trainer(batch_size=0), VE, "Trainer: batch_size must be an int >= 1, got 0", id="trainer-batch"),
    R(lambda: nn.Trainer(None, nn.MSELoss(), nn.SGD(0.1)), TE, r"model must have a forward\(\) method", id="trainer-model"),
    R(lambda: nn.Trainer(mlp(), nn.MSELoss(), "sgd"), TE, r"optimizer must have a step\(\) method", id="trainer-optimizer"),
    R(lambda: trainer(seed="x"), TE, "Trainer: seed must be None or an int >= 0, got 'x'", id="trainer-seed-str"),
    R(lambda: trainer(seed=-1), VE, "Trainer: seed must be None or an int >= 0, got -1", id="trainer-seed-negative"),
    R(lambda: trainer(metrics=3), TE, "Trainer: metrics must be", id="trainer-metrics-int"),
    R(lambda: trainer(metrics=["f1"]), VE, "unknown metric 'f1'", id="trainer-metrics-name"),
    R(lambda: trainer().fit(X, Y, -1), VE, "epochs must be an int >= 0, got -1", id="fit-epochs"),
    R(lambda: trainer().fit(X, Y, 1.5), VE, "epochs must be an int >= 0", id="fit-epochs-float"),
    R(lambda: fit(verbose=3), VE, "verbose must be 0, 1 or 2", id="fit-verbose"),
    R(lambda: fit(X=np.full((20, 4), np.nan)), VE, "Trainer.fit: input X contains NaN", id="fit-X-nan"),
    R(lambda: fit(X=np.full((20, 4), np.inf)), VE, "input X contains infinity", id="fit-X-inf"),
    R(lambda: fit(X=np.full((20, 4), 1e300)), VE, "too large for float32", id="fit-X-beyond-float32"),
    R(lambda: fit(X=X.astype(complex)), VE, "Trainer.fit: X is complex", id="fit-X-complex"),
    R(lambda: fit(X=np.full((20, 4), "abc")), TE, "cannot be converted to numbers", id="fit-X-str"),
    R(lambda: fit(X=[[1, 2, 3, 4], [1]], y=[0, 1]), TE, "Trainer.fit: X must be an array", id="fit-X-ragged"),
    R(lambda: fit(X=X[:0], y=Y[:0]), VE, "X has 0 samples", id="fit-X-empty"),
    R(lambda: fit(X=X[:, 0]), VE, r"X must be 2-D \(samples x features\)", id="fit-X-1d"),
    R(lambda: fit(X=X[:, :3]), VE, "X has 3 features, but the model expects 4", id="fit-X-features"),
    R(lambda: fit(y=None), VE, "the target y is None", id="fit-y-none"),
    R(lambda: fit(y=Y[:5]), VE, "X has 20 samples but y has 5", id="fit-y-count"),
    R(lambda: fit(y=Y + 3), VE, r"class index 3, outside \[0, 3\)", id="fit-y-high"),
    R(lambda: fit(y=Y - 1), VE, r"class index -1, outside", id="fit-y-negative"),
    R(lambda: fit(y=np.full(20, 1e300)), VE, r"class index 1e\+300, outside", id="fit-y-float-huge"),
    R(lambda: fit(y=np.full(20, 2**64 - 1, np.uint64)), VE, "class index 18446744073709551615", id="fit-y-uint64-huge"),
    R(lambda: fit(y=Y + 0.5), VE, "must hold integer class indices", id="fit-y-fraction"),
    R(lambda: fit(y=np.full(20, np.nan)), VE, "y contains NaN or infinity", id="fit-y-nan"),
    R(lambda: fit(y=Y.astype(str)), TE, "y has dtype <U", id="fit-y-str"),
    R(lambda: fit(y=np.ones((20, 3))), VE, "one class index per sample", id="fit-y-2d"),
    R(lambda: fit(y=np.ones((20, 2)), loss=nn.MSELoss()), VE, "y has 2 target column", id="fit-mse-columns"),
    R(lambda: fit(y=np.ones((20, 0)), loss=nn.MSELoss()), VE, "y has 0 target columns", id="fit-mse-no-columns"),
    R(lambda: fit(y=np.full(20, 2.0), loss=nn.BCEWithLogitsLoss(), n_out=1), VE, r"y must be in \[0, 1\]", id="fit-bce-range"),
    R(lambda: fit(validation_split=1.5), VE, r"validation_split must be in \(0, 1\)", id="fit-split-range"),
    R(lambda: fit(validation_split="0.2"), VE, "validation_split must be in", id="fit-split-str"),
    R(lambda: fit(validation_split=0.01), VE, "leaves no training or no validation", id="fit-split-tiny"),
    R(lambda: fit(validation_data=X), VE, r"validation_data must be a pair", id="fit-val-data"),
    R(lambda: fit(validation_data=(X[:, :2], Y)), VE, r"\(validation_data\): X has 2 features", id="fit-val-features"),
    R(lambda: fit(validation_data=(X, Y), validation_split=0.5), VE, "not both", id="fit-val-both"),
    R(lambda: fit(callbacks=3), TE, "callbacks must be a list", id="fit-callbacks-int"),
    R(lambda: fit(callbacks=[3]), TE, r"callbacks\[0\] \(int\) is not a callback", id="fit-callbacks-item"),
    R(lambda: fit(sample_weight=-np.ones(20)), VE, "sample_weight must be finite and >= 0", id="fit-weight-negative"),
    R(lambda: fit(sample_weight=np.zeros(20)), VE, "sample_weight is zero for every sample", id="fit-weight-zero"),
    R(lambda: fit(sample_weight="a"), VE, "sample_weight must hold numbers", id="fit-weight-str"),
    R(lambda: fit(sample_weight=np.ones(3)), VE, r"sample_weight has shape \(3,\)", id="fit-weight-count"),
    R(lambda: fit(loss=nn.HuberLoss(), y=X[:, :3], sample_weight=np.ones(20)), VE, "not HuberLoss", id="fit-weight-huber"),
    R(lambda: trainer().evaluate(X[:0], Y[:0]), VE, "Trainer.evaluate: X has 0 samples", id="evaluate-empty"),
    R(lambda: trainer().predict(X[:, :2]), VE, "Trainer.predict: X has 2 features", id="trainer-predict-features"),
    # ---- callbacks ----
    R(lambda: cb.EarlyStopping(patience=-1), VE, "patience must be an int >= 0", id="early-patience"),
    R(lambda: cb.EarlyStopping(min_delta="a"), VE, "min_delta must be a finite number", id="early-delta"),
    R(lambda: cb.EarlyStopping(mode="up"), VE, "mode must be 'auto', 'min' or 'max'", id="early-mode"),
    R(lambda: cb.EarlyStopping(monitor=3), TE, "monitor must be the name", id="early-monitor-int"),
    R(lambda: fit(callbacks=[cb.EarlyStopping(monitor="val_loss")]), VE, "monitor 'val_loss' is not in the epoch logs", id="early-monitor-missing"),
    R(lambda: cb.ModelCheckpoint(3), TE, "path must be a str or path-like", id="checkpoint-path-int"),
    R(lambda: cb.ModelCheckpoint("m-{}.nnc"), VE, "positional field", id="checkpoint-positional"),
    R(lambda: cb.ModelCheckpoint("m-{epoch.nnc"), VE, "not a valid format string", id="checkpoint-format"),
    R(lambda: fit(callbacks=[cb.ModelCheckpoint("/nonexistent-dir/{nope}.nnc")]), VE, r"uses \['nope'\], which the epoch logs do not hold", id="checkpoint-field"),
    R(lambda: fit(callbacks=[cb.ModelCheckpoint("/nonexistent-dir/m-{epoch:s}.nnc")]), VE, "cannot fill in path", id="checkpoint-format-spec"),
    R(lambda: cb.StepLR(0), VE, "step_size must be an int >= 1", id="steplr-size"),
    R(lambda: cb.StepLR(1, gamma=-1), VE, "gamma must be a finite number > 0", id="steplr-gamma"),
    R(lambda: cb.StepLR(1, gamma=math.nan), VE, "gamma must be a finite number", id="steplr-gamma-nan"),
    R(lambda: cb.CosineAnnealingLR(3, eta_min=-1), VE, "eta_min must be a finite number >= 0", id="cosine-eta"),
    R(lambda: cb.LinearWarmup(3, start_factor=0), VE, r"start_factor must be in \(0, 1\]", id="warmup-factor"),
    R(lambda: cb.LinearWarmup(3, start_factor="a"), VE, "start_factor must be a finite number", id="warmup-factor-str"),
    R(lambda: cb.LinearWarmup(3, unit="step"), VE, "unit must be 'batch' or 'epoch'", id="warmup-unit"),
    R(lambda: cb.ReduceLROnPlateau(factor=1.5), VE, r"factor must be in \(0, 1\)", id="plateau-factor"),
    R(lambda: cb.ReduceLROnPlateau(patience=-2), VE, "patience must be an int >= 0", id="plateau-patience"),
    R(lambda: cb.ReduceLROnPlateau(min_lr=-1), VE, "min_lr must be a finite number >= 0", id="plateau-min-lr"),
    R(lambda: cb.LambdaCallback(on_epoch_end=3), TE, "on_epoch_end must be callable", id="lambda-not-callable"),
    R(lambda: fit(callbacks=[cb.StepLR(1, gamma=1e300)]), VE, "lr must be finite in float32", id="steplr-overflow"),
    # ---- estimators ----
    R(lambda: clf(hidden_layer_sizes="abc").fit(X, Y), VE, "hidden_layer_sizes must hold ints >= 1", id="clf-hidden-str"),
    R(lambda: clf(hidden_layer_sizes=(0,)).fit(X, Y), VE, "hidden_layer_sizes must hold ints >= 1", id="clf-hidden-zero"),
    R(lambda: clf(hidden_layer_sizes=None).fit(X, Y), VE, "hidden_layer_sizes must be a sequence", id="clf-hidden-none"),
    R(lambda: clf(hidden_layer_sizes=(HUGE, HUGE)).fit(X, Y), ME, "weights need", id="clf-hidden-huge"),
    R(lambda: clf(activation="swish").fit(X, Y), VE, "activation must be one of", id="clf-activation"),
    R(lambda: clf(solver="newton").fit(X, Y), VE, "solver must be one of", id="clf-solver"),
    R(lambda: clf(alpha=-1).fit(X, Y), VE, "alpha must be a number >= 0", id="clf-alpha"),
    R(lambda: clf(learning_rate_init=0).fit(X, Y), VE, "learning_rate_init must be a number > 0", id="clf-lr"),
    R(lambda: clf(learning_rate_init=1e300).fit(X, Y), VE, "lr must be finite in float32", id="clf-lr-huge"),
    R(lambda: clf(max_iter=0).fit(X, Y), VE, "max_iter must be an int >= 1", id="clf-max-iter"),
    R(lambda: clf(batch_size=0).fit(X, Y), VE, "batch_size must be 'auto' or an int >= 1", id="clf-batch"),
    R(lambda: clf(validation_fraction="x").fit(X, Y), VE, r"validation_fraction must be in \[0, 1\)", id="clf-val-fraction"),
    R(lambda: clf(beta_1=1).fit(X, Y), VE, r"beta_1 must be in \[0, 1\)", id="clf-beta"),
    R(lambda: clf(n_threads=0).fit(X, Y), VE, "n_threads must be None or an int >= 1", id="clf-threads"),
    R(lambda: clf(n_threads=10**6).fit(X, Y), VE, r"set_num_threads: n must be in \[1, 1024\]", id="clf-threads-absurd"),
    R(lambda: clf(random_state="x").fit(X, Y), VE, "random_state must be None, an int", id="clf-random-state"),
    R(lambda: clf(random_state=-1).fit(X, Y), VE, "random_state must be an int >= 0", id="clf-random-state-negative"),
    R(lambda: clf(tol=math.nan).fit(X, Y), VE, "tol must be a number >= 0", id="clf-tol"),
    R(lambda: clf(momentum=2).fit(X, Y), VE, r"momentum must be in \[0, 1\]", id="clf-momentum"),
    R(lambda: clf().set_params(nope=1), VE, "Invalid parameter 'nope'", id="clf-set-params"),
    R(lambda: clf().fit(np.full((20, 4), np.nan), Y), VE, "NNClassifier.fit: input X contains NaN", id="clf-X-nan"),
    R(lambda: clf().fit([[1, 2], [1]], [0, 1]), TE, "NNClassifier.fit: X must be an array", id="clf-X-ragged"),
    R(lambda: clf().fit(X, np.array([1, "a"] * 10, dtype=object)), VE, "labels mix types", id="clf-mixed-labels"),
    R(lambda: clf().fit(X, np.array([None] * 20)), TE, "class labels cannot be sorted", id="clf-unsortable-labels"),
    R(lambda: clf().fit(X, Y.astype(complex)), VE, "complex labels are not supported", id="clf-complex-labels"),
    R(lambda: clf().fit(X, Y + 0.5), VE, "Unknown label type: continuous", id="clf-continuous-labels"),
    R(lambda: clf().predict(X), VE, "is not fitted yet", id="clf-not-fitted"),
    R(lambda: fitted_clf().predict(X[:, :2]), VE, "X has 2 features, but NNClassifier is expecting 4", id="clf-predict-features"),
    R(lambda: fitted_clf().predict(X[:0]), VE, "X has 0 samples", id="clf-predict-empty"),
    R(lambda: fitted_clf().score(X, Y[:3]), VE, "NNClassifier.score: X has 20 samples but y has 3", id="clf-score-count"),
    R(lambda: fitted_clf().score(X, Y, sample_weight="x"), VE, "sample_weight must be 20 numbers", id="clf-score-weight"),
    R(lambda: fitted_clf().partial_fit(X, Y + 5), VE, "y holds the label", id="clf-partial-new-label"),
    R(lambda: clf().partial_fit(X, Y), VE, "classes must be passed on the first call", id="clf-partial-classes"),
    R(lambda: reg().fit(X, np.array(["a"] * 20)), VE, "NNRegressor: y has dtype <U1", id="reg-y-str"),
    R(lambda: reg().fit(X, np.ones((20, 2, 2))), VE, "y must be 1-D or 2-D", id="reg-y-3d"),
    R(lambda: reg().fit(X, np.full(20, 1e300)), VE, "too large for float32", id="reg-y-huge"),
    R(lambda: reg().fit(X, np.ones((20, 0))), VE, "y has 0 target columns", id="reg-y-no-columns"),
    R(lambda: reg().fit(X, X[:, 0]).score(X, np.ones(3)), VE, "NNRegressor.score: X has 20 samples but y has 3", id="reg-score-count"),
    R(lambda: reg().fit(X, X[:, 0]).score(X, np.ones((20, 2))), VE, "expected 1 target", id="reg-score-columns"),
    # ---- save / load ----
    R(lambda: nn.save(3, "x.nnc"), TE, "expected a Sequential model or a fitted", id="save-int"),
    R(lambda: nn.save(clf(), "x.nnc"), VE, "is not fitted yet", id="save-unfitted"),
    R(lambda: nn.save(mlp(), None), TE, "expected str, bytes or os.PathLike", id="save-path-none"),
    R(lambda: nn.load(None), TE, "expected str, bytes or os.PathLike", id="load-path-none"),
    R(lambda: nn.load("/dev/null"), FormatError, "the file is empty", id="load-empty-file"),
    R(lambda: nn.load("/proc/self/status"), FormatError, "wrong magic bytes", id="load-text-file"),
    R(lambda: nn.load(archive("t.nnc", {"nncore": "0.1.0", "kind": "model", "model": {"layers": [{"type": []}]}})), FormatError, r"unknown layer type \[\]", id="load-layer-type-list"),
    R(lambda: nn.load(archive("t.nnc", {"nncore": "0.1.0", "kind": "model", "model": {"layers": [{"type": {"a": 1}}]}})), FormatError, "unknown layer type", id="load-layer-type-dict"),
    # ---- profiler ----
    R(lambda: nn.profile(max_events=0), VE, "max_events must be an int >= 1", id="profile-zero"),
    R(lambda: nn.profile(max_events=2**70), ME, "profile: room for max_events=1180591620717411303424 events needs", id="profile-absurd"),
    # ---- datasets ----
    R(lambda: datasets.train_test_split(X, Y, test_size=2.0), VE, r"test_size must be in \(0, 1\)", id="split-size"),
    R(lambda: datasets.train_test_split(X, Y, test_size="a"), TE, "test_size must be a fraction", id="split-size-str"),
    R(lambda: datasets.train_test_split(X, Y[:3]), VE, "must have the same length", id="split-length"),
    R(lambda: datasets.train_test_split(X, Y, seed="x"), TE, "train_test_split: seed must be", id="split-seed"),
    R(lambda: datasets.train_test_split(X, Y, stratify=np.array([None, 1] * 10, dtype=object)), TE, "stratify labels cannot be sorted", id="split-stratify-unsortable"),
    R(lambda: datasets.write_idx("x.idx", np.ones(2, complex)), TE, "has no IDX type code", id="write-idx-complex"),
    R(lambda: datasets.read_idx("/dev/null"), FormatError, "too short for an IDX header", id="read-idx-empty"),
    # ---- loss landscape ----
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), X, Y, dims=1.0), VE, "dims must be 1 or 2, got 1.0", id="landscape-dims"),
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), X, Y, steps=1), VE, "steps must be an int >= 2", id="landscape-steps"),
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), X, Y, steps=HUGE), ME, r"a \(1000000, 1000000\) grid of losses needs", id="landscape-steps-huge"),
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), X, Y, span=0), VE, "span must be a finite number > 0", id="landscape-span"),
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), X, Y, normalization="l2"), VE, "normalization must be one of", id="landscape-normalization"),
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), X, Y, seed="x"), TE, "seed must be an int >= 0", id="landscape-seed"),
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), [[1, 2], [1]], Y), TE, "loss_landscape: X must be an array", id="landscape-X-ragged"),
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), np.full((20, 4), np.nan), Y), VE, "X contains NaN", id="landscape-X-nan"),
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), X, Y[:3]), VE, "y has 3 rows, X has 20", id="landscape-y-count"),
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), X, Y + 3, steps=3), VE, "outside", id="landscape-y-range"),
    R(lambda: nn.loss_landscape(None, nn.CrossEntropyLoss(), X, Y), TE, "model must have parameters", id="landscape-model"),
    R(lambda: nn.loss_landscape(mlp(), None, X, Y), TE, "loss must have forward", id="landscape-loss"),
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), X, Y, directions=3), TE, "directions must be a list", id="landscape-directions"),
    R(lambda: nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), X, Y, batch_size=0), VE, "batch_size must be a positive int", id="landscape-batch"),
    R(lambda: nn.interpolate_loss(mlp(), mlp(n_out=4), nn.CrossEntropyLoss(), X, Y), VE, "parameters differ", id="interpolate-models"),
    R(lambda: nn.interpolate_loss(mlp(), mlp(), nn.CrossEntropyLoss(), X, Y, alpha_range=(0, math.nan)), VE, "alpha_range must be finite", id="interpolate-range"),
    R(lambda: nn.trajectory_landscape(mlp(), nn.CrossEntropyLoss(), X, Y, 3), TE, "trajectory must be a TrajectoryRecorder", id="trajectory-int"),
    R(lambda: nn.trajectory_landscape(mlp(), nn.CrossEntropyLoss(), X, Y, [np.ones(3)] * 3), VE, "snapshot 0 has 3 weights", id="trajectory-size"),
    R(lambda: nn.TrajectoryRecorder(every=0), VE, "every must be an int >= 1", id="recorder-every"),
]


@pytest.mark.parametrize("call, error, match", REJECTED)
def test_rejected(call, error, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # rows that write files write them here
    with pytest.raises(error, match=match):
        call()


# ---- usable input: converted once, same results ----

def _variants(a):
    """``a`` (float32, 2-D) as other layouts and dtypes that hold the same values."""
    fortran = np.asfortranarray(a)
    strided = np.repeat(a, 2, axis=1)[:, ::2]
    mis = misaligned(a.shape)
    mis[...] = a
    out = {"float64": a.astype(np.float64), "fortran": fortran, "strided": strided,
           "readonly": readonly(a), "misaligned": mis, "list": a.tolist()}
    assert not strided.flags.c_contiguous and not fortran.flags.c_contiguous
    return out


INTS = np.arange(-6, 6).reshape(3, 4)
INT_VARIANTS = {"int64": INTS, "int8": INTS.astype(np.int8), "uint8": (INTS + 6).astype(np.uint8),
                "bool": INTS > 0}
BROADCAST = np.broadcast_to(np.arange(4, dtype=F32), (3, 4))


def _converted_cases():
    base = f32(3, 4, seed=1)
    for name, v in _variants(base).items():
        yield name, v, base
    for name, v in INT_VARIANTS.items():
        yield name, v, np.asarray(v, dtype=F32)
    yield "broadcast", BROADCAST, np.ascontiguousarray(BROADCAST)


CONVERTED = list(_converted_cases())


@pytest.mark.parametrize("name, x, ref", CONVERTED, ids=[c[0] for c in CONVERTED])
def test_converted_like_float32(name, x, ref):
    nn.manual_seed(3)
    model = nn.Sequential(nn.Dense(4, 5), nn.Tanh(), nn.Dense(5, 3))
    w = f32(4, 2, seed=2)
    np.testing.assert_array_equal(nn.matmul(x, w), nn.matmul(ref, w))
    np.testing.assert_array_equal(nn.matmul(w, x, trans_a=True, trans_b=True),
                                  nn.matmul(w, ref, trans_a=True, trans_b=True))
    np.testing.assert_array_equal(model.predict(x), model.predict(ref))
    np.testing.assert_array_equal(model.forward(x), model.predict(ref))
    target = f32(3, 4, seed=4)
    assert nn.MSELoss().forward(x, target) == nn.MSELoss().forward(ref, target)
    assert nn.HuberLoss().forward(target, x) == nn.HuberLoss().forward(target, ref)
    if name != "list":
        assert not np.shares_memory(model.forward(x), x)     # never written into


@pytest.mark.parametrize("name, x, ref", CONVERTED, ids=[c[0] for c in CONVERTED])
def test_fit_converts_like_float32(name, x, ref):
    y = np.array([0, 1, 2])
    runs = []
    for data in (x, ref):
        tr = nn.Trainer(mlp(), nn.CrossEntropyLoss(), nn.SGD(0.1), batch_size=2, seed=0)
        tr.fit(data, y, 2, verbose=0)
        runs.append(tr.model.state_dict())
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key])


def test_labels_in_other_int_dtypes_and_layouts():
    pred = f32(6, 3)
    want = nn.CrossEntropyLoss().forward(pred, np.array([0, 1, 2, 2, 1, 0]))
    for labels in (np.array([0, 1, 2, 2, 1, 0], np.uint8), np.array([[0], [1], [2], [2], [1], [0]]),
                   np.repeat(np.array([0, 1, 2, 2, 1, 0]), 2)[::2], [0, 1, 2, 2, 1, 0]):
        assert nn.CrossEntropyLoss().forward(pred, labels) == want


def test_nan_and_inf_propagate_through_layers_without_a_crash():
    """Documented: layers and losses do not scan for NaN (a pass per step);
    IEEE arithmetic carries it, as in PyTorch."""
    x = f32(4, 4)
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    model = nn.Sequential(nn.Dense(4, 3), nn.ReLU(), nn.Dense(3, 2))
    out = model.predict(x)
    assert np.isfinite(out[[0, 3]]).all() and not np.isfinite(out[1]).all()
    assert math.isnan(nn.MSELoss().forward(out, np.zeros_like(out)))
    assert np.isnan(nn.matmul(x, np.ones((4, 1), F32))[1, 0])


def test_memory_guard_refuses_before_allocating(monkeypatch):
    """With 100 MB available, a 5000 x 5000 Dense (400 MB with its gradient and
    initial draw) is refused before any array exists; smaller ones pass."""
    monkeypatch.setattr(_guard, "available_bytes", lambda: 100 << 20)
    import tracemalloc
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match=r"Dense\(5000->5000\).*needs 0.4 GiB, more than "
                                              r"the 0.1 GiB"):
            nn.Dense(5000, 5000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    nn.Dense(1000, 1000)                            # 16 MB: under the check threshold
    with pytest.raises(MemoryError, match=r"matmul: the \(10000, 10000\) float32 output"):
        nn.matmul(np.ones((10000, 1), F32), np.ones((1, 10000), F32))
    with pytest.raises(MemoryError, match="Adam.step: the state of param 0"):
        nn.Adam().step([(np.zeros(20 << 20, F32), np.zeros(20 << 20, F32))])


def test_available_bytes_reads_this_machine():
    available = _guard.available_bytes()
    if not os.path.exists("/proc/meminfo"):
        assert available is None
    else:
        assert 0 < available < 1 << 50


def test_hostile_model_file_sizes_are_refused(tmp_path):
    """A header announcing a Dense(10**6 -> 10**6) without its 4 TB of tensors
    is refused from the header, before anything is allocated."""
    path = archive(tmp_path / "big.nnc", {
        "nncore": "0.1.0", "kind": "model",
        "model": {"layers": [{"type": "Dense", "in_features": HUGE, "out_features": HUGE}]}},
        {"0.weight": np.zeros((1, 1), F32), "0.bias": np.zeros(1, F32)})
    with pytest.raises(FormatError, match="tensor '0.weight' is float32 \\(1, 1\\), expected "
                                          "float32 \\(1000000, 1000000\\)"):
        nn.load(path)


def test_save_into_a_missing_directory_names_the_path(tmp_path):
    target = tmp_path / "missing" / "m.nnc"
    with pytest.raises(FileNotFoundError, match=f"cannot write {target}"):
        nn.save(mlp(), target)
    with pytest.raises(IsADirectoryError, match=f"cannot write {tmp_path}"):
        nn.save(mlp(), tmp_path)
    assert os.listdir(tmp_path) == []               # no temporary file left behind


def test_absurd_but_valid_sizes_just_work():
    """Sizes far beyond the data are clamped to it, not allocated."""
    model = mlp()
    np.testing.assert_array_equal(model.predict(X, batch_size=10**18), model.predict(X))
    history = trainer(batch_size=10**18).fit(X, Y, 1, verbose=0)
    assert len(history) == 1
    assert len(trainer().fit(X, Y, 0, verbose=0)) == 0
    assert len(nn.loss_landscape(mlp(), nn.CrossEntropyLoss(), X, Y, steps=3,
                                 batch_size=10**18).losses) == 3
