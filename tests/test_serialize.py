"""nncore.save / nncore.load: bitwise round trips of models and estimators,
and hostile files (valid archives with hostile contents, and broken files)."""
import copy
import os
import pickle
import warnings

import numpy as np
import pytest

import nncore as nn
from nncore.errors import FormatError
from nncore.io import read_archive, write_archive

pytestmark = pytest.mark.filterwarnings("ignore::nncore.estimators.ConvergenceWarning")


F32 = np.float32


def model_zoo():
    nn.manual_seed(0)
    inner = nn.Sequential(nn.Dense(16, 8, activation="tanh"), nn.LeakyReLU(0.2))
    return nn.Sequential(nn.Dense(5, 16), nn.ReLU(), nn.Dropout(0.3), inner,
                         nn.Dense(8, 8, bias=False), nn.GELU(), nn.Dense(8, 3, "sigmoid"))


def data(n=60, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)


def test_model_round_trip_is_bitwise(tmp_path):
    model = model_zoo()
    X, y = data()
    nn.Trainer(model, nn.CrossEntropyLoss(), nn.Adam(lr=0.01), seed=0).fit(X, y, 3, verbose=0)
    path = tmp_path / "model.nnc"
    nn.save(model, path)
    loaded = nn.load(path)
    assert loaded.get_config() == model.get_config()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert not loaded.training


def mlp():
    nn.manual_seed(0)
    return nn.Sequential(nn.Dense(5, 16), nn.ReLU(), nn.Dense(16, 8, activation="tanh"),
                         nn.Dense(8, 3))


@pytest.mark.parametrize("make", [
    lambda: nn.Adam(lr=0.01, weight_decay=0.01),
    lambda: nn.SGD(lr=0.05, momentum=0.9, nesterov=True),
    lambda: nn.RMSprop(lr=0.01, centered=True, momentum=0.5),
], ids=["Adam", "SGD-nesterov", "RMSprop"])
def test_checkpoint_with_optimizer_resumes_bitwise(tmp_path, make):
    X, y = data()
    model, opt = mlp(), make()
    path = tmp_path / "ckpt.nnc"
    nn.Trainer(model, nn.CrossEntropyLoss(), opt, batch_size=8, seed=0).fit(
        X, y, 2, verbose=0, callbacks=[nn.callbacks.ModelCheckpoint(path, save_optimizer=True)])
    nn.Trainer(model, nn.CrossEntropyLoss(), opt, batch_size=8, seed=1).fit(X, y, 2, verbose=0)

    def resume(optimizer):
        loaded = nn.load(path, optimizer=optimizer)
        nn.Trainer(loaded, nn.CrossEntropyLoss(), optimizer, batch_size=8, seed=1).fit(
            X, y, 2, verbose=0)
        return loaded
    resumed = resume(make())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value)
    # the optimizer's state is what makes it bitwise: without it the run differs
    restarted = nn.load(path)
    nn.Trainer(restarted, nn.CrossEntropyLoss(), make(), batch_size=8, seed=1).fit(
        X, y, 2, verbose=0)
    assert not np.array_equal(restarted.state_dict()["0.weight"], model.state_dict()["0.weight"])
    # hyperparameters come from the file
    other = type(make())(lr=0.5)
    nn.load(path, optimizer=other)
    assert other.get_config() == make().get_config()


def test_optimizer_argument_errors(tmp_path):
    X, y = data()
    model, path = mlp(), tmp_path / "m.nnc"
    nn.save(model, path)
    with pytest.raises(FormatError, match="holds no optimizer state"):
        nn.load(path, optimizer=nn.Adam())
    nn.save(model, path, optimizer=nn.Adam())            # no steps yet: an empty state
    with pytest.raises(TypeError, match="the file holds Adam state; optimizer is a SGD"):
        nn.load(path, optimizer=nn.SGD(0.1))
    loaded_opt = nn.AdamW()
    with pytest.raises(TypeError, match="holds Adam state; optimizer is a AdamW"):
        nn.load(path, optimizer=loaded_opt)
    with pytest.raises(TypeError, match="optimizer must be an nncore SGD, Adam"):
        nn.save(model, path, optimizer=object())
    clf = nn.NNClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    with pytest.raises(TypeError, match="optimizer= is for models"):
        nn.save(clf, tmp_path / "e.nnc", optimizer=nn.Adam())
    nn.save(clf, tmp_path / "e.nnc")
    with pytest.raises(TypeError, match="optimizer= is for model files"):
        nn.load(tmp_path / "e.nnc", optimizer=nn.Adam())
    trainer = nn.Trainer(mlp(), nn.CrossEntropyLoss(), clf._trainer.optimizer)
    with pytest.raises(TypeError, match="save_optimizer needs an nncore SGD"):
        trainer.fit(X, y, 1, verbose=0, callbacks=[
            nn.callbacks.ModelCheckpoint(tmp_path / "c.nnc", save_optimizer=True)])


def test_load_leaves_the_seeded_stream_alone(tmp_path):
    nn.save(model_zoo(), tmp_path / "m.nnc")
    nn.manual_seed(42)
    expected = nn.init.get_generator().random(3)
    nn.manual_seed(42)
    nn.load(tmp_path / "m.nnc")
    np.testing.assert_array_equal(nn.init.get_generator().random(3), expected)


@pytest.mark.parametrize("labels", [
    np.array(["no", "yes"]),                        # binary, numpy strings
    np.array(["a", "b", "c"], dtype=object),        # multiclass, object strings
    np.array([-3, 7, 11]),                          # ints
    np.array([1.0, 2.0]),                           # floats (integral: sklearn's rule)
    np.array([False, True]),                        # bools
])
def test_classifier_round_trip(tmp_path, labels):
    X, y = data()
    y = labels[y % len(labels)]
    clf = nn.NNClassifier(hidden_layer_sizes=(8, 4), max_iter=5, random_state=0,
                          early_stopping=len(labels) == 3).fit(X, y)
    nn.save(clf, tmp_path / "clf.nnc")
    back = nn.load(tmp_path / "clf.nnc")
    assert type(back) is nn.NNClassifier and back.get_params() == clf.get_params()
    np.testing.assert_array_equal(back.classes_, clf.classes_)
    assert back.classes_.dtype == clf.classes_.dtype
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    for attr in ("loss_curve_", "validation_scores_", "best_loss_", "best_validation_score_",
                 "n_iter_", "t_", "n_features_in_"):
        assert getattr(back, attr) == getattr(clf, attr), attr
    back.set_params(early_stopping=False).partial_fit(X, y)     # still trainable
    assert back.n_iter_ == 1 and len(back.loss_curve_) == len(clf.loss_curve_) + 1


@pytest.mark.parametrize("targets", [1, 3])
def test_regressor_round_trip(tmp_path, targets):
    X, _ = data()
    Y = X[:, :targets] * 2 + 1
    reg = nn.NNRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(
        X, Y[:, 0] if targets == 1 else Y)
    nn.save(reg, tmp_path / "reg.nnc")
    back = nn.load(tmp_path / "reg.nnc")
    np.testing.assert_array_equal(back.predict(X), reg.predict(X))
    assert back.predict(X).shape == reg.predict(X).shape


def test_unfitted_or_foreign_objects_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        nn.save(nn.NNClassifier(), tmp_path / "x.nnc")
    with pytest.raises(TypeError, match="expected a Sequential"):
        nn.save({"weights": 1}, tmp_path / "x.nnc")
    assert not os.listdir(tmp_path)


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "m.nnc"
    model = model_zoo()
    nn.save(model, path)
    before = path.read_bytes()
    X, y = data()
    clf = nn.NNClassifier(hidden_layer_sizes=(4,), max_iter=2).fit(X, y)
    clf.classes_ = np.array([object(), object(), object()])     # not storable
    with pytest.raises(TypeError, match="cannot be saved"):
        nn.save(clf, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.nnc"]


# ---- hostile files -----------------------------------------------------------


def valid_estimator_file(tmp_path):
    X, y = data()
    clf = nn.NNClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    path = tmp_path / "ok.nnc"
    nn.save(clf, path)
    return read_archive(path)


def dense_entry(meta, i):
    return meta["model"]["layers"][i]


MUTATIONS = {
    "unknown kind": lambda m, t: m.update(kind="pickle"),
    "extra top-level key": lambda m, t: m.update(run="os.system('x')"),
    "missing model": lambda m, t: m.pop("model"),
    "model not a dict": lambda m, t: m.update(model=[1, 2]),
    "unknown layer type": lambda m, t: m["model"]["layers"].append({"type": "Lambda",
                                                                    "code": "import os"}),
    "layer not a dict": lambda m, t: m["model"]["layers"].insert(0, "Dense"),
    "absurd shape": lambda m, t: dense_entry(m, 0).update(in_features=10 ** 12,
                                                          out_features=10 ** 12),
    "size as a string": lambda m, t: dense_entry(m, 0).update(in_features="5"),
    "size as a bool": lambda m, t: dense_entry(m, 2).update(out_features=True),
    "negative size": lambda m, t: dense_entry(m, 0).update(in_features=-5),
    "unknown init": lambda m, t: dense_entry(m, 0).update(init="__import__('os')"),
    "unknown layer key": lambda m, t: dense_entry(m, 0).update(callback="print"),
    "too many layers": lambda m, t: m["model"]["layers"].extend([{"type": "ReLU"}] * 10001),
    "missing tensor": lambda m, t: t.pop("0.bias"),
    "extra tensor": lambda m, t: t.update(extra=np.zeros(3, np.float32)),
    "float64 tensor": lambda m, t: t.update({"0.bias": t["0.bias"].astype(np.float64)}),
    "wrong tensor shape": lambda m, t: t.update({"0.weight": t["0.weight"].T.copy()}),
    "NaN weight": lambda m, t: t["2.weight"].__setitem__((0, 0), np.nan),
    "estimator class": lambda m, t: m["estimator"].update({"class": "os.system"}),
    "unknown param": lambda m, t: m["estimator"]["params"].update(__class__="x"),
    "bad param value": lambda m, t: m["estimator"]["params"].update(solver="newton"),
    "missing fitted attribute": lambda m, t: m["estimator"]["fitted"].pop("n_iter_"),
    "features mismatch": lambda m, t: m["estimator"]["fitted"].update(n_features_in_=4),
    "classes mismatch": lambda m, t: m["estimator"]["fitted"]["classes_"]["values"].append(9),
    "classes dtype": lambda m, t: m["estimator"]["fitted"]["classes_"].update(dtype="object"),
    "classes values": lambda m, t: m["estimator"]["fitted"]["classes_"].update(
        values=[[1], {"a": 2}, None]),
    "classes unsorted": lambda m, t: m["estimator"]["fitted"]["classes_"].update(
        values=[2, 1, 0]),
    "loss curve": lambda m, t: m["estimator"]["fitted"].update(loss_curve_="1,2"),
    "hidden mismatch": lambda m, t: m["estimator"]["fitted"].update(hidden=[5]),
    "version entry": lambda m, t: m.update(nncore={"exec": 1}),
    # the optimizer state partial_fit resumes from
    "training not a dict": lambda m, t: m["estimator"].update(training=[1]),
    "training without tensors' entry": lambda m, t: m["estimator"].pop("training"),
    "training optimizer type": lambda m, t: optimizer_entry(m, 0).update(type="SGD"),
    "training optimizer count": lambda m, t: m["estimator"]["training"]["optimizers"].pop(),
    "training config value": lambda m, t: optimizer_entry(m, 0)["config"].update(lr=-1),
    "training config key": lambda m, t: optimizer_entry(m, 1)["config"].update(exec="x"),
    "training steps": lambda m, t: optimizer_entry(m, 0).update(steps=[1]),
    "training buffer missing": lambda m, t: t.pop("training.0.0.exp_avg"),
    "training buffer shape": lambda m, t: t.update({"training.0.0.exp_avg": np.zeros(3, F32)}),
    "training buffer NaN": lambda m, t: t["training.1.1.exp_avg_sq"].__setitem__(0, np.nan),
    "training extra buffer": lambda m, t: t.update({"training.0.9.exp_avg": np.zeros(3, F32)}),
    "training stray tensor": lambda m, t: t.update({"training.7.0.x": np.zeros(3, F32)}),
    "shuffle generator": lambda m, t: m["estimator"]["training"]["shuffle"].update(
        bit_generator="MT19937"),
    "shuffle state": lambda m, t: m["estimator"]["training"]["shuffle"]["state"].update(
        inc=2 ** 200),
}


def optimizer_entry(meta, g):
    return meta["estimator"]["training"]["optimizers"][g]


def valid_checkpoint_file(tmp_path):
    X, y = data()
    model, opt = mlp(), nn.SGD(0.1, momentum=0.9)
    nn.Trainer(model, nn.CrossEntropyLoss(), opt, seed=0).fit(X, y, 1, verbose=0)
    path = tmp_path / "ok.nnc"
    nn.save(model, path, optimizer=opt)
    return read_archive(path)


CHECKPOINT_MUTATIONS = {
    "optimizer not a dict": lambda m, t: m.update(optimizer="SGD"),
    "optimizer unknown type": lambda m, t: m["optimizer"].update(type="os.system"),
    "optimizer config not a dict": lambda m, t: m["optimizer"].update(config=[0.1]),
    "optimizer config value": lambda m, t: m["optimizer"]["config"].update(momentum=-1),
    "optimizer config key": lambda m, t: m["optimizer"]["config"].update(__class__="x"),
    "optimizer extra key": lambda m, t: m["optimizer"].update(code="x"),
    "optimizer steps": lambda m, t: m["optimizer"].update(steps="1"),
    "optimizer buffer shape": lambda m, t: t.update(
        {"optimizer.0.momentum_buffer": np.zeros((16, 5), F32)}),
    "optimizer buffer inf": lambda m, t: t["optimizer.1.momentum_buffer"].__setitem__(0, np.inf),
    "optimizer buffer missing": lambda m, t: t.pop("optimizer.2.momentum_buffer"),
    "optimizer buffer extra": lambda m, t: t.update(
        {"optimizer.9.momentum_buffer": np.zeros(3, F32)}),
    "optimizer tensors without entry": lambda m, t: m.pop("optimizer"),
    "optimizer entry in an estimator": lambda m, t: m.update(kind="estimator"),
}


def mutated_file(tmp_path, valid_file, mutate):
    """valid_file's contents, changed by mutate(meta, tensors), in a new file."""
    meta, tensors = valid_file(tmp_path)
    meta, tensors = copy.deepcopy(meta), {k: v.copy() for k, v in tensors.items()}
    mutate(meta, tensors)
    path = tmp_path / "hostile.nnc"
    write_archive(path, meta, tensors)
    return path


@pytest.mark.parametrize("name", sorted(CHECKPOINT_MUTATIONS))
def test_hostile_checkpoint_contents_raise_format_error(tmp_path, name):
    path = mutated_file(tmp_path, valid_checkpoint_file, CHECKPOINT_MUTATIONS[name])
    with pytest.raises(FormatError, match="hostile.nnc"):
        nn.load(path)
    with pytest.raises(FormatError, match="hostile.nnc"):
        nn.load(path, optimizer=nn.SGD(0.1))


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_hostile_contents_raise_format_error(tmp_path, name):
    path = mutated_file(tmp_path, valid_estimator_file, MUTATIONS[name])
    with pytest.raises(FormatError, match="hostile.nnc"):
        nn.load(path)


def test_pickles_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "model.nnc"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(FormatError, match="pickle"):
        nn.load(path)
    assert not marker.exists()


def test_broken_files_raise_format_error(tmp_path):
    path = tmp_path / "m.nnc"
    nn.save(model_zoo(), path)
    good = path.read_bytes()
    for cut in (0, 7, 30, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:cut])
        with pytest.raises(FormatError):
            nn.load(path)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    path.write_bytes(bytes(flipped))
    with pytest.raises(FormatError, match="checksum"):
        nn.load(path)
    np.save(tmp_path / "w.npy", np.zeros(3, dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="NumPy"):
        nn.load(tmp_path / "w.npy")
    with pytest.raises(OSError):
        nn.load(tmp_path / "missing.nnc")


def test_pickling_estimators_round_trips():
    X, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = nn.NNClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
