"""Callbacks: learning-rate schedules against PyTorch's rules (closed forms,
and torch itself when installed), early stopping, checkpoints, the protocol."""
import math
import types

import numpy as np
import pytest

import nncore as nn
from nncore.callbacks import (CosineAnnealingLR, EarlyStopping, LambdaCallback, LinearWarmup,
                              ModelCheckpoint, ReduceLROnPlateau, StepLR)


def drive(schedule, lr, epochs, batches_per_epoch=1, monitor=None):
    """Run a schedule through a fake training loop; return the lr each epoch
    (per_batch: each batch) started with."""
    optimizer = types.SimpleNamespace(lr=lr)
    schedule.set_trainer(types.SimpleNamespace(optimizer=optimizer))
    schedule.on_train_begin({})
    seen = []
    for epoch in range(epochs):
        for batch in range(batches_per_epoch):
            seen.append(optimizer.lr)
            if hasattr(schedule, "on_batch_end"):
                schedule.on_batch_end(batch, {"batch": batch, "size": 1, "loss": 0.0})
        logs = {"loss": 1.0, "val_loss": monitor[epoch] if monitor else 1.0}
        schedule.on_epoch_end(epoch, logs)
    return seen


def test_step_lr_closed_form():
    seen = drive(StepLR(step_size=3, gamma=0.5), 0.8, 10)
    expected = [0.8 * 0.5 ** (e // 3) for e in range(10)]
    np.testing.assert_allclose(seen, expected, rtol=1e-15)


def test_cosine_annealing_closed_form_and_restart():
    T, eta_min, base = 5, 0.01, 0.1
    seen = drive(CosineAnnealingLR(T_max=T, eta_min=eta_min), base, 2 * T + 1)
    closed = [eta_min + (base - eta_min) * (1 + math.cos(math.pi * e / T)) / 2
              for e in range(2 * T + 1)]
    # PyTorch's recursive form equals the closed form up to rounding, also
    # past T_max, where the cosine rises again.
    np.testing.assert_allclose(seen, closed, rtol=1e-12, atol=1e-15)
    assert seen[T] == pytest.approx(eta_min)


def test_linear_warmup_per_batch():
    seen = drive(LinearWarmup(total_iters=4, start_factor=0.25), 1.0, 2, batches_per_epoch=4)
    expected = [0.25 + 0.75 * min(t, 4) / 4 for t in range(8)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)


def test_linear_warmup_per_epoch():
    seen = drive(LinearWarmup(total_iters=2, start_factor=0.5, unit="epoch"), 0.2, 4,
                 batches_per_epoch=3)
    np.testing.assert_allclose(seen, [0.1] * 3 + [0.15] * 3 + [0.2] * 6, rtol=1e-12)


def test_reduce_on_plateau_patience_and_cooldown():
    values = [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.2]
    seen = drive(ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1), 1.0, len(values),
                 monitor=values)
    # epochs 2,3 bad -> reduce after epoch 3; cooldown 1 epoch; bad 5,6 -> reduce after 6...
    assert seen == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


def test_reduce_on_plateau_min_lr():
    seen = drive(ReduceLROnPlateau(factor=0.1, patience=0, min_lr=0.05), 1.0, 4,
                 monitor=[1.0, 1.0, 1.0, 1.0])
    assert seen == [1.0, 1.0, 0.1, 0.05]


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    param = [torch.nn.Parameter(torch.zeros(1))]

    def torch_lrs(make, epochs, per_batch=1, monitor=None):
        opt = torch.optim.SGD(param, lr=0.3)
        sched = make(opt)
        seen = []
        for e in range(epochs):
            for _ in range(per_batch):
                seen.append(opt.param_groups[0]["lr"])
                opt.step()
                if per_batch > 1:
                    sched.step()
            if per_batch == 1:
                sched.step(monitor[e]) if monitor else sched.step()
        return seen

    S = torch.optim.lr_scheduler
    monitor = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    cases = [
        (StepLR(4, 0.3), lambda o: S.StepLR(o, 4, 0.3), 12, 1, None),
        (CosineAnnealingLR(4, 0.001), lambda o: S.CosineAnnealingLR(o, 4, 0.001), 12, 1, None),
        (LinearWarmup(5, start_factor=0.2), lambda o: S.LinearLR(o, 0.2, 1.0, 5), 3, 4, None),
        (ReduceLROnPlateau(patience=1, factor=0.5, cooldown=1),
         lambda o: S.ReduceLROnPlateau(o, patience=1, factor=0.5, cooldown=1), 12, 1, monitor),
    ]
    for ours, theirs, epochs, per_batch, mon in cases:
        np.testing.assert_allclose(drive(ours, 0.3, epochs, per_batch, mon),
                                   torch_lrs(theirs, epochs, per_batch, mon), rtol=1e-6,
                                   err_msg=type(ours).__name__)


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="step_size"):
        StepLR(0)
    with pytest.raises(ValueError, match="start_factor"):
        LinearWarmup(3, start_factor=0.0)
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1.5)
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)


# ---- with the real trainer -----------------------------------------------------


def blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (3, 4))
    y = rng.integers(0, 3, n)
    X = (centers[y] + rng.normal(0, 1, (n, 4))).astype(np.float32)
    return X, y


def classifier(seed=0):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Dense(4, 16), nn.ReLU(), nn.Dense(16, 3))


def test_early_stopping_stops_and_restores_best():
    X, y = blobs()
    model = classifier()
    calls = []
    # a monitor that gets worse after epoch 2 (0-based): stop after `patience` more
    fake = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9]
    spy = LambdaCallback(on_epoch_end=lambda e, logs: logs.__setitem__("fake", fake[e]))
    stopper = EarlyStopping(monitor="fake", patience=2, restore_best_weights=True)
    keep = LambdaCallback(on_epoch_end=lambda e, logs: calls.append(
        {k: v.copy() for k, v in model.state_dict().items()}))
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(lr=0.05), seed=0)
    history = trainer.fit(X, y, 8, callbacks=[spy, keep, stopper], verbose=0)
    assert len(history) == 5 and stopper.stopped_epoch == 4 and stopper.best_epoch == 2
    assert trainer.stop_training
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, calls[2][k])


def test_early_stopping_min_delta_and_missing_monitor():
    X, y = blobs()
    trainer = nn.Trainer(classifier(), nn.CrossEntropyLoss(), nn.SGD(lr=0.05), seed=0)
    # a huge min_delta: no epoch after the first counts as an improvement
    stopper = EarlyStopping(monitor="loss", patience=1, min_delta=1e9)
    assert len(trainer.fit(X, y, 10, callbacks=[stopper], verbose=0)) == 2
    with pytest.raises(ValueError, match="val_loss.*validation_data"):
        trainer.fit(X, y, 2, callbacks=[EarlyStopping()], verbose=0)


def test_model_checkpoint_best_only(tmp_path):
    X, y = blobs()
    model = classifier()
    fake = [3.0, 2.0, 2.5, 1.0]
    spy = LambdaCallback(on_epoch_end=lambda e, logs: logs.__setitem__("fake", fake[e]))
    best = ModelCheckpoint(tmp_path / "best.nnc", monitor="fake", save_best_only=True)
    every = ModelCheckpoint(str(tmp_path / "e{epoch:02d}.nnc"))
    snapshots = []
    keep = LambdaCallback(on_epoch_end=lambda e, logs: snapshots.append(model.predict(X)))
    nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(lr=0.05), seed=0).fit(
        X, y, 4, callbacks=[spy, keep, best, every], verbose=0)
    assert best.saved == [str(tmp_path / "best.nnc")] * 3      # epochs 1, 2, 4 improved
    assert every.saved == [str(tmp_path / f"e{i:02d}.nnc") for i in range(1, 5)]
    np.testing.assert_array_equal(nn.load(tmp_path / "best.nnc").predict(X), snapshots[3])
    np.testing.assert_array_equal(nn.load(tmp_path / "e02.nnc").predict(X), snapshots[1])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_protocol_order_and_stop_from_batch():
    X, y = blobs(n=100)
    events = []

    class Recorder(nn.callbacks.Callback):
        def on_train_begin(self, logs=None):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"epoch_begin {epoch}")
            self.epoch = epoch

        def on_batch_end(self, batch, logs=None):
            events.append(f"batch {batch} {logs['size']}")
            if self.epoch == 1 and batch == 1:
                self.trainer.stop_training = True     # stops after this batch

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"epoch_end {epoch}")

        def on_train_end(self, logs=None):
            events.append("train_end")

    trainer = nn.Trainer(classifier(), nn.CrossEntropyLoss(), nn.SGD(lr=0.05), batch_size=40,
                         seed=0)
    trainer.fit(X, y, 5, callbacks=[Recorder()], verbose=0)
    assert events == ["train_begin", "epoch_begin 0", "batch 0 40", "batch 1 40", "batch 2 20",
                      "epoch_end 0", "epoch_begin 1", "batch 0 40", "batch 1 40",
                      "epoch_end 1", "train_end"]


def test_lr_is_logged_and_scheduled_in_fit():
    X, y = blobs()
    opt = nn.SGD(lr=0.1)
    history = nn.Trainer(classifier(), nn.CrossEntropyLoss(), opt, seed=0).fit(
        X, y, 5, callbacks=[StepLR(2, gamma=0.5)], verbose=0)
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert opt.lr == pytest.approx(0.025)      # reduced after epochs 2 and 4
