"""Resuming a run bitwise from a ModelCheckpoint(save_optimizer=True) file:
Trainer.fit(..., resume_from=path) in one process, unsharded and sharded
(the MPI case is in tests/test_distributed.py), the refusals, and the file
staying an ordinary model file."""
import numpy as np
import pytest

import nncore as nn
from nncore.errors import FormatError
from nncore.io import read_archive, write_archive

N, BATCH, EPOCHS = 203, 16, 4           # 13 batches per epoch, the last one short


def _data(n=N):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 12)).astype(np.float32)
    return X, (X[:, :3].argmax(axis=1) + (X[:, 3] > 1)) % 3


def top_logit(y_true, y_pred):
    return float(y_pred.max(axis=1).mean())


def _trainer(shards=None, batch_size=BATCH, optimizer=None, seed=1):
    nn.manual_seed(3)
    model = nn.Sequential(nn.Dense(12, 24), nn.ReLU(), nn.Dropout(0.25), nn.Dense(24, 3))
    optimizer = optimizer or nn.SGD(lr=0.1, momentum=0.9, nesterov=True)
    return nn.Trainer(model, nn.CrossEntropyLoss(), optimizer, batch_size=batch_size,
                      seed=seed, shards=shards, metrics=["accuracy", top_logit])


def _callbacks(path, save_freq):
    # every schedule with state, and an EarlyStopping that never fires
    return [nn.callbacks.ModelCheckpoint(path, save_optimizer=True, save_freq=save_freq),
            nn.callbacks.LinearWarmup(total_iters=9),
            nn.callbacks.CosineAnnealingLR(T_max=3),
            nn.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, threshold=0.5),
            nn.callbacks.EarlyStopping(monitor="loss", patience=100)]


def _stop_after(trainer, epoch, batch):
    def stop(b, logs):
        if trainer._position == (epoch, batch):
            trainer.stop_training = True
    return nn.callbacks.LambdaCallback(on_batch_end=stop)


def _logged(history):
    return {k: history[k] for k in history.keys() if k not in ("seconds", "samples_per_sec")}


def _assert_same_run(ref, got):
    (ref_model, ref_history), (got_model, got_history) = ref, got
    a, b = ref_model.state_dict(), got_model.state_dict()
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []
    assert got_history.epoch == ref_history.epoch
    assert _logged(got_history) == _logged(ref_history)


@pytest.mark.parametrize("shards", [None, 4])
@pytest.mark.parametrize("save_freq, stop, saved_at", [
    (5, (1, 9), (1, 7)),            # mid-epoch: step 20 of 52, stopped at step 22
    (13, (2, 4), (1, 13)),          # every 13 steps: after each epoch's last batch
    ("epoch", (2, 4), (2, 0)),      # per epoch; stopped mid-epoch 3
])
def test_a_stopped_run_resumes_bitwise(tmp_path, shards, save_freq, stop, saved_at):
    X, y = _data()
    trainer = _trainer(shards)
    ref = trainer.fit(X, y, EPOCHS, verbose=0,
                      callbacks=_callbacks(str(tmp_path / "ref.nnc"), save_freq))
    ref = trainer.model, ref

    path = str(tmp_path / "ckpt.nnc")
    trainer = _trainer(shards)
    stopped = trainer.fit(X, y, EPOCHS, verbose=0, callbacks=_callbacks(path, save_freq) + [
        _stop_after(trainer, *stop)])
    # a stop mid-epoch logs the partial epoch too
    assert trainer.stop_training and len(stopped) == stop[0] + 1
    _, _, entry, _ = nn.serialize.read_checkpoint(path)
    assert (entry["epoch"], entry["batch"]) == saved_at

    # a fresh trainer, model and generators: everything comes from the file
    nn.manual_seed(99)
    trainer = _trainer(shards, seed=42)
    history = trainer.fit(X, y, EPOCHS, verbose=0, callbacks=_callbacks(path, save_freq),
                          resume_from=path)
    _assert_same_run(ref, (trainer.model, history))


@pytest.mark.parametrize("shuffle, weighted", [(False, False), (True, True)])
def test_resume_without_shuffling_or_with_sample_weights(tmp_path, shuffle, weighted):
    X, y = _data()
    w = np.random.default_rng(5).random(N) if weighted else None

    def fit(path, stop=None, resume_from=None):
        trainer = _trainer()
        trainer.shuffle = shuffle
        extra = [_stop_after(trainer, *stop)] if stop else []
        history = trainer.fit(X, y, 3, verbose=0, sample_weight=w, resume_from=resume_from,
                              callbacks=_callbacks(path, 5) + extra)
        return trainer, history

    trainer, history = fit(str(tmp_path / "ref.nnc"))
    ref = trainer.model, history
    path = str(tmp_path / "ckpt.nnc")
    fit(path, stop=(1, 9))
    trainer, history = fit(path, resume_from=path)
    _assert_same_run(ref, (trainer.model, history))


def test_a_resumed_run_writes_the_same_checkpoints(tmp_path):
    X, y = _data()
    trainer = _trainer()
    trainer.fit(X, y, 2, verbose=0, callbacks=_callbacks(str(tmp_path / "a-{epoch}-{batch}.nnc"),
                                                         6))
    trainer = _trainer()
    folder = tmp_path / "b"
    folder.mkdir()
    pattern = str(folder / "b-{epoch}-{batch}.nnc")
    trainer.fit(X, y, 1, verbose=0, callbacks=_callbacks(pattern, 6))
    trainer = _trainer()
    trainer.fit(X, y, 2, verbose=0, callbacks=_callbacks(pattern, 6),
                resume_from=str(folder / "b-1-12.nnc"))
    # steps 6, 12, 18, 24: (epoch 1, batch 6), (1, 12), (2, 5), (2, 11)
    assert sorted(p.name for p in folder.iterdir()) == ["b-1-12.nnc", "b-1-6.nnc",
                                                        "b-2-11.nnc", "b-2-5.nnc"]
    a = read_archive(str(tmp_path / "a-2-11.nnc"))[1]
    b = read_archive(str(folder / "b-2-11.nnc"))[1]
    assert sorted(a) == sorted(b)
    differ = [k for k in a if not np.array_equal(a[k], b[k])
              and k not in ("training.history.seconds", "training.history.samples_per_sec")]
    assert differ == [], differ


def _checkpoint(tmp_path, **kwargs):
    X, y = _data()
    path = str(tmp_path / "ckpt.nnc")
    _trainer(**kwargs).fit(X, y, 2, verbose=0, callbacks=_callbacks(path, 5))
    return path


@pytest.mark.parametrize("change, message", [
    (dict(batch_size=32), "written with batch_size=16, this trainer has batch_size=32"),
    (dict(n=150), "written training on 203 samples, this fit has 150"),
    (dict(shards=4), "written with shards=None, this trainer has shards=4"),
    (dict(optimizer=nn.Adam(lr=1e-3)), "holds SGD state, the trainer's optimizer is a Adam"),
    (dict(callbacks=[]), "holds the state of the callbacks ['ModelCheckpoint', 'LinearWarmup'"),
    (dict(epochs=1), "it is past epoch 1, batch 12; epochs=1"),
])
def test_a_resume_from_another_run_is_refused(tmp_path, change, message):
    path = _checkpoint(tmp_path)
    X, y = _data(change.pop("n", N))
    callbacks = change.pop("callbacks", _callbacks(path, 5))
    epochs = change.pop("epochs", EPOCHS)
    trainer = _trainer(**change)
    with pytest.raises(ValueError, match="cannot resume from") as info:
        trainer.fit(X, y, epochs, verbose=0, callbacks=callbacks, resume_from=path)
    assert message in str(info.value)


def test_a_file_without_a_training_position_is_refused(tmp_path):
    X, y = _data()
    trainer = _trainer()
    path = str(tmp_path / "model.nnc")
    nn.save(trainer.model, path, optimizer=trainer.optimizer)
    with pytest.raises(ValueError, match="holds no training position"):
        trainer.fit(X, y, 1, verbose=0, resume_from=path)


def test_a_tampered_permutation_is_a_format_error(tmp_path):
    # the permutation indexes the data: a file must not be able to point outside it
    path = _checkpoint(tmp_path)
    meta, tensors = read_archive(path)
    tensors["training.perm"][0] = N + 5
    write_archive(path, meta, tensors)
    X, y = _data()
    with pytest.raises(FormatError, match="must be a permutation of 0..202"):
        _trainer().fit(X, y, EPOCHS, verbose=0, callbacks=_callbacks(path, 5),
                       resume_from=path)


def test_a_checkpoint_is_still_a_model_file(tmp_path):
    path = _checkpoint(tmp_path)
    optimizer = nn.SGD(lr=0.0)
    model = nn.load(path, optimizer=optimizer)
    assert optimizer.momentum == 0.9 and optimizer.nesterov
    X, _ = _data()
    assert model.predict(X).shape == (N, 3)


def test_save_freq_is_checked():
    with pytest.raises(ValueError, match="save_freq must be 'epoch' or an int >= 1"):
        nn.callbacks.ModelCheckpoint("x.nnc", save_freq=0)
    with pytest.raises(ValueError, match="save_best_only compares epoch logs"):
        nn.callbacks.ModelCheckpoint("x.nnc", save_freq=3, save_best_only=True)


# ---- the command line: train --checkpoint PATH [--checkpoint-every N] --resume ----

def _train_cli(tmp_path, epochs, name, *flags):
    from nncore.__main__ import main
    out = tmp_path / f"{name}.nnc"
    assert main(["train", "--data", "digits", "--epochs", str(epochs), "--verbose", "0",
                 "--threads", "1", "--out", str(out), *flags]) == 0
    return nn.load(str(out)).state_dict()


def test_cli_resumes_bitwise(tmp_path, capsys):
    ref = _train_cli(tmp_path, 3, "ref", "--checkpoint", str(tmp_path / "r.nnc"),
                     "--checkpoint-every", "7")
    ckpt = str(tmp_path / "c.nnc")
    _train_cli(tmp_path, 2, "first", "--checkpoint", ckpt, "--checkpoint-every", "7")
    capsys.readouterr()
    got = _train_cli(tmp_path, 3, "resumed", "--checkpoint", ckpt, "--checkpoint-every", "7",
                     "--resume")
    assert f"resuming from {ckpt}" in capsys.readouterr().out
    assert all(np.array_equal(ref[k], got[k]) for k in ref)


def test_cli_checkpoint_flags_are_checked(capsys):
    from nncore.__main__ import main
    assert main(["train", "--data", "digits", "--resume"]) == 2
    assert "--resume need --checkpoint PATH" in capsys.readouterr().err
    assert main(["train", "--data", "digits", "--checkpoint", "c.nnc",
                 "--checkpoint-every", "0"]) == 2
    assert "--checkpoint-every must be >= 1" in capsys.readouterr().err


def test_cli_ctrl_c_prints_where_it_stopped(tmp_path, capsys, monkeypatch):
    from nncore.__main__ import main

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt("Trainer.fit: interrupted (SIGINT) after batch 3 of epoch 1")
    monkeypatch.setattr(nn.Trainer, "fit", interrupted)
    ckpt = str(tmp_path / "c.nnc")
    assert main(["train", "--data", "digits", "--checkpoint", ckpt, "--out", ""]) == 130
    assert (f"interrupted (SIGINT) after batch 3 of epoch 1; resume with --checkpoint {ckpt} "
            "--resume") in capsys.readouterr().out
