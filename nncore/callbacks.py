"""Callbacks for ``Trainer.fit``: early stopping, checkpoints, learning-rate
schedules, and the protocol for writing your own.

A callback is any object with some of these methods (subclass ``Callback``
for no-op defaults); the trainer sets ``callback.trainer`` before training::

    on_train_begin(logs)          on_train_end(logs)
    on_epoch_begin(epoch, logs)   on_epoch_end(epoch, logs)
    on_batch_end(batch, logs)     # logs: {"batch", "size", "loss"}

``epoch`` and ``batch`` count from 0. The ``logs`` of ``on_epoch_end`` hold
the epoch's entries of the History: ``loss``, the metrics (``accuracy``),
``val_loss``/``val_accuracy`` with validation data, ``lr``, ``seconds`` and
``samples_per_sec``. Setting ``self.trainer.stop_training = True`` ends
training after the current batch. ``on_batch_end`` is called only for
callbacks that define it, so epoch-level callbacks cost nothing per batch.

A callback whose decisions depend on earlier epochs keeps that state in the
attributes named by its ``_state`` tuple: ``state_dict()`` returns them
(ints, floats or None) and ``load_state_dict(d)`` puts them back, after
``on_train_begin``, when ``Trainer.fit(..., resume_from=path)`` resumes a
run from a ``ModelCheckpoint(..., save_optimizer=True)`` file.

Learning-rate schedules change ``trainer.optimizer.lr`` in place and follow
``torch.optim.lr_scheduler``'s update rules (the same recursive "chainable"
forms, so several schedules compose as they do in PyTorch): a run can be
compared with PyTorch's epoch by epoch.
"""
import math
import numbers
import os
import string

import numpy as np

from .serialize import OPTIMIZERS, save

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "StepLR", "CosineAnnealingLR",
           "ReduceLROnPlateau", "LinearWarmup", "LambdaCallback"]


class Callback:
    """Base class: every hook does nothing. ``self.trainer`` is the Trainer."""

    trainer = None
    _state = ()         # the attributes a resumed run needs back (see state_dict)

    def state_dict(self):
        """The callback's state a checkpoint keeps: {name: int, float or None}."""
        return {name: getattr(self, name) for name in self._state}

    def load_state_dict(self, state):
        for name in self._state:
            setattr(self, name, state[name])

    def set_trainer(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    # on_batch_end is deliberately not defined here: the trainer calls it only
    # on callbacks that define it (see batch_hooks), keeping batch-1 training fast.


def batch_hooks(callbacks):
    """The bound ``on_batch_end`` methods of the callbacks that have one."""
    return [cb.on_batch_end for cb in callbacks if callable(getattr(cb, "on_batch_end", None))]


class LambdaCallback(Callback):
    """A callback from plain functions, e.g.
    ``LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))``."""

    def __init__(self, on_train_begin=None, on_train_end=None, on_epoch_begin=None,
                 on_epoch_end=None, on_batch_end=None):
        for name, fn in (("on_train_begin", on_train_begin), ("on_train_end", on_train_end),
                         ("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_batch_end", on_batch_end)):
            if fn is not None:
                if not callable(fn):
                    raise TypeError(f"LambdaCallback: {name} must be callable, got "
                                    f"{type(fn).__name__}")
                setattr(self, name, fn)


def _monitored(callback, logs, monitor):
    """The value of ``monitor`` in the epoch logs, or a clear error."""
    if monitor not in logs:
        available = ", ".join(k for k in logs if k not in ("seconds", "samples_per_sec", "lr"))
        hint = " (pass validation_data or validation_split to fit)" \
            if monitor.startswith("val_") else ""
        raise ValueError(f"{type(callback).__name__}: monitor {monitor!r} is not in the "
                         f"epoch logs; available: {available}{hint}")
    return float(logs[monitor])


def _number(value, name, who, lo=0.0, lo_open=False):
    """A finite float >= lo (> lo when lo_open), or ValueError naming it."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < lo or (lo_open and value == lo)):
        raise ValueError(f"{who}: {name} must be a finite number {'>' if lo_open else '>='} "
                         f"{lo:g}, got {value!r}")
    return float(value)


def _check_monitor(monitor, who):
    if not isinstance(monitor, str):
        raise TypeError(f"{who}: monitor must be the name of a logged value (a str), got "
                        f"{monitor!r}")


def _resolve_mode(mode, monitor, who):
    _check_monitor(monitor, who)
    if mode == "auto":
        return "max" if ("acc" in monitor or monitor.endswith("score")) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs.

    ``mode`` is 'min', 'max' or 'auto' (max for accuracies, min otherwise).
    With ``restore_best_weights=True`` the model gets the weights of its best
    epoch back when training ends (whether it stopped early or ran out of
    epochs). After training, ``best``, ``best_epoch`` and ``stopped_epoch``
    (None when it did not stop early) describe what happened.
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        self.min_delta = _number(min_delta, "min_delta", "EarlyStopping")
        self.monitor = monitor
        self.patience = patience
        self.mode = _resolve_mode(mode, monitor, "EarlyStopping")
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None
        self.wait = 0

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = _monitored(self, logs or {}, self.monitor)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = {k: np.array(v, copy=True)
                                     for k, v in self.trainer.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model with ``nncore.save`` at the end of epochs, or every
    ``save_freq`` batches.

    ``path`` may hold format fields filled from the epoch (1-based) and logs,
    e.g. ``"ckpt-{epoch:03d}-{val_loss:.3f}.nnc"`` (with ``save_freq=k``:
    ``epoch``, ``batch``, the batch's number in its epoch from 1, and
    ``loss``, the batch's). With ``save_best_only``, save only when
    ``monitor`` improves (mode as in EarlyStopping; per epoch only).

    ``save_optimizer=True`` makes the file a checkpoint that resumes the run
    bitwise: the optimizer state and the training position go in too (the
    epoch and batch, the shuffling and Dropout generators, the epoch's
    permutation, the callbacks' state, the history so far; see
    nncore/resume.py), and ``Trainer.fit(X, y, epochs, resume_from=path)``
    continues from there (``nncore.load(path, optimizer=...)`` still reads
    it as a model). ``save_freq=k`` saves after every k-th batch of the run
    (counting from its first epoch, so a resumed run saves at the same
    steps).

    When a callback stops training mid-epoch, the partial epoch's
    ``on_epoch_end`` writes no checkpoint with ``save_optimizer`` (the
    callbacks then treat the partial epoch as complete, which no position
    describes): the previous one stays the one to resume from.

    Every save is atomic (a temporary file renamed over the target), so an
    interrupted or killed run never leaves a truncated checkpoint behind.
    ModelCheckpoint's hooks run after those of the other callbacks, so a
    file holds what the next step starts from (a schedule's new rate, say).
    """

    # in data-parallel training (Trainer(comm=...)) only rank 0 writes: the
    # ranks hold the same weights, and two writers would race on one file
    rank_zero_only = True
    runs_last = True
    _state = ("best",)

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto",
                 save_optimizer=False, save_freq="epoch"):
        if not isinstance(path, (str, bytes)) and not hasattr(path, "__fspath__"):
            raise TypeError(f"ModelCheckpoint: path must be a str or path-like, got "
                            f"{type(path).__name__}")
        self.path = os.fsdecode(os.fspath(path))
        try:
            self._fields = {field.split(".")[0].split("[")[0]
                            for _, field, _, _ in string.Formatter().parse(self.path)
                            if field is not None}
        except ValueError as exc:
            raise ValueError(f"ModelCheckpoint: path {self.path!r} is not a valid format "
                             f"string ({exc})") from None
        if "" in self._fields or any(f.isdigit() for f in self._fields):
            raise ValueError(f"ModelCheckpoint: path {self.path!r} has a positional field; "
                             "name the fields, e.g. {epoch:03d}")
        if save_freq != "epoch":
            if isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1:
                raise ValueError(f"ModelCheckpoint: save_freq must be 'epoch' or an int >= 1 "
                                 f"(batches), got {save_freq!r}")
            if save_best_only:
                raise ValueError("ModelCheckpoint: save_best_only compares epoch logs; use it "
                                 "with save_freq='epoch'")
            self.on_batch_end = self._batch_end
        self.save_freq = save_freq
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.save_optimizer = bool(save_optimizer)
        self.mode = _resolve_mode(mode, monitor, "ModelCheckpoint")
        self.best = None
        self.saved = []

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf
        optimizer = self.trainer.optimizer
        if self.save_optimizer and type(optimizer) not in OPTIMIZERS.values():
            raise TypeError(f"ModelCheckpoint: save_optimizer needs an nncore SGD, Adam, AdamW "
                            f"or RMSprop, got {type(optimizer).__name__}")

    def _save(self, values, epoch_end):
        logs = "epoch logs" if epoch_end else "batch logs"
        missing = sorted(self._fields - set(values))
        if missing:
            raise ValueError(f"ModelCheckpoint: path {self.path!r} uses {missing}, which the "
                             f"{logs} do not hold; available: {sorted(values)}")
        try:
            path = self.path.format(**values)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            raise ValueError(f"ModelCheckpoint: cannot fill in path {self.path!r} from the "
                             f"{logs} ({type(exc).__name__}: {exc})") from None
        trainer = self.trainer
        training = None
        if self.save_optimizer:
            position = getattr(trainer, "training_position", None)
            if callable(position):
                training = position(epoch_end)
                if training is None:
                    return      # an epoch cut short: the previous checkpoint stays
        save(trainer.model, path, optimizer=trainer.optimizer if self.save_optimizer else None,
             training=training)
        self.saved.append(path)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq != "epoch":
            return
        logs = logs or {}
        if self.save_best_only:
            value = _monitored(self, logs, self.monitor)
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
            self.best = value
        self._save(dict(logs, epoch=epoch + 1), True)

    def _batch_end(self, batch, logs=None):
        trainer = self.trainer
        epoch = trainer._position[0]
        step = epoch * -(-trainer.n_samples // trainer.batch_size) + batch + 1
        if step % self.save_freq == 0:
            self._save({"epoch": epoch + 1, "batch": batch + 1,
                        "loss": (logs or {}).get("loss")}, False)


class _Schedule(Callback):
    """Shared by the learning-rate schedules: the optimizer and its lr."""

    def _optimizer(self):
        optimizer = self.trainer.optimizer
        if not hasattr(optimizer, "lr"):
            raise TypeError(f"{type(self).__name__}: the optimizer "
                            f"{type(optimizer).__name__} has no `lr` attribute")
        return optimizer


def _check_positive_int(value, name, who):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {name} must be an int >= 1, got {value!r}")


class StepLR(_Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs
    (``torch.optim.lr_scheduler.StepLR``, stepped once per epoch)."""

    _state = ("last_epoch",)

    def __init__(self, step_size, gamma=0.1):
        _check_positive_int(step_size, "step_size", "StepLR")
        self.step_size = step_size
        self.gamma = _number(gamma, "gamma", "StepLR", lo_open=True)

    def on_train_begin(self, logs=None):
        self.last_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch += 1
        if self.last_epoch % self.step_size == 0:
            optimizer = self._optimizer()
            optimizer.lr = optimizer.lr * self.gamma


class CosineAnnealingLR(_Schedule):
    """Cosine annealing from the initial learning rate down to ``eta_min``
    over ``T_max`` epochs (``torch.optim.lr_scheduler.CosineAnnealingLR``: the
    same recursive update, so past ``T_max`` it rises again, as PyTorch's does)."""

    _state = ("base_lr", "last_epoch")

    def __init__(self, T_max, eta_min=0.0):
        _check_positive_int(T_max, "T_max", "CosineAnnealingLR")
        self.T_max = T_max
        self.eta_min = _number(eta_min, "eta_min", "CosineAnnealingLR")

    def on_train_begin(self, logs=None):
        self.base_lr = float(self._optimizer().lr)
        self.last_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self._optimizer()
        self.last_epoch += 1
        t, T, lr, eta_min = self.last_epoch, self.T_max, optimizer.lr, self.eta_min
        if (t - 1 - T) % (2 * T) == 0:
            lr = lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
        else:
            lr = ((1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                  * (lr - eta_min) + eta_min)
        optimizer.lr = lr


class LinearWarmup(_Schedule):
    """Scale the learning rate linearly from ``start_factor`` to ``end_factor``
    times its initial value over the first ``total_iters`` batches (or epochs
    with ``unit="epoch"``), then leave it alone.

    The rule is ``torch.optim.lr_scheduler.LinearLR``'s (stepped per batch by
    default, as warm-up usually is): the first batch uses
    ``start_factor * lr``.
    """

    _state = ("last_epoch",)

    def __init__(self, total_iters, start_factor=1.0 / 3, end_factor=1.0, unit="batch"):
        _check_positive_int(total_iters, "total_iters", "LinearWarmup")
        _number(start_factor, "start_factor", "LinearWarmup")
        _number(end_factor, "end_factor", "LinearWarmup")
        if not 0.0 < start_factor <= 1.0 or not 0.0 <= end_factor <= 1.0:
            raise ValueError("LinearWarmup: start_factor must be in (0, 1] and end_factor in "
                             f"[0, 1], got {start_factor!r} and {end_factor!r}")
        if unit not in ("batch", "epoch"):
            raise ValueError(f"LinearWarmup: unit must be 'batch' or 'epoch', got {unit!r}")
        self.total_iters = total_iters
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)
        self.unit = unit
        if unit == "epoch":
            self.on_epoch_end = self._epoch_step
        else:
            self.on_batch_end = self._batch_step

    def on_train_begin(self, logs=None):
        optimizer = self._optimizer()
        self.last_epoch = 0
        optimizer.lr = optimizer.lr * self.start_factor

    def _step(self):
        self.last_epoch += 1
        t = self.last_epoch
        if t > self.total_iters:
            return
        optimizer = self._optimizer()
        delta = self.end_factor - self.start_factor
        optimizer.lr = optimizer.lr * (
            1.0 + delta / (self.total_iters * self.start_factor + (t - 1) * delta))

    def _batch_step(self, batch, logs=None):
        self._step()

    def _epoch_step(self, epoch, logs=None):
        self._step()


class ReduceLROnPlateau(_Schedule):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not
    improved for more than ``patience`` epochs
    (``torch.optim.lr_scheduler.ReduceLROnPlateau``: same threshold, cooldown,
    min_lr and eps rules)."""

    _state = ("best", "num_bad_epochs", "cooldown_counter")

    def __init__(self, monitor="val_loss", mode="auto", factor=0.1, patience=10,
                 threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        who = "ReduceLROnPlateau"
        if not 0.0 < _number(factor, "factor", who) < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{who}: {name} must be an int >= 0, got {value!r}")
        _number(threshold, "threshold", who)
        _number(min_lr, "min_lr", who)
        _number(eps, "eps", who)
        if threshold_mode not in ("rel", "abs"):
            raise ValueError("ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got "
                             f"{threshold_mode!r}")
        self.monitor = monitor
        self.mode = _resolve_mode(mode, monitor, "ReduceLROnPlateau")
        self.factor = float(factor)
        self.patience = patience
        self.threshold = float(threshold)
        self.threshold_mode = threshold_mode
        self.cooldown = cooldown
        self.min_lr = float(min_lr)
        self.eps = float(eps)

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _is_better(self, a):
        best, th = self.best, self.threshold
        if self.mode == "min":
            return a < (best * (1.0 - th) if self.threshold_mode == "rel" else best - th)
        return a > (best * (1.0 + th) if self.threshold_mode == "rel" else best + th)

    def on_epoch_end(self, epoch, logs=None):
        current = _monitored(self, logs or {}, self.monitor)
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            optimizer = self._optimizer()
            new_lr = max(optimizer.lr * self.factor, self.min_lr)
            if optimizer.lr - new_lr > self.eps:
                optimizer.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
