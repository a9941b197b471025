"""Resuming a run bitwise from a checkpoint: the training position that
``ModelCheckpoint(..., save_optimizer=True)`` writes next to the model and
the optimizer state, and that ``Trainer.fit(..., resume_from=path)`` reads.

A checkpoint is taken between two steps. What the steps after it depend on,
besides the weights (with BatchNorm's running statistics) and the optimizer
state that ``nncore.save(model, path, optimizer=...)`` already holds:

- the position: ``epoch`` (from 0) and ``batch``, the number of batches of
  that epoch already trained (0: the epoch has not started, its shuffle not
  drawn yet);
- the sampler: the epoch's index permutation as it is now (the trainer
  shuffles one permutation in place, epoch after epoch, so the next one
  depends on it, not only on the generator) and the shuffling generator's
  state;
- nncore's generator (``manual_seed``'s: Dropout masks and the sharded
  trainer's per-step keys);
- the callbacks' state (``state_dict()``: an LR schedule's step count, a
  plateau's counters, ...), and the learning rate they set, which is in the
  optimizer's config;
- the History so far and, mid-epoch, the epoch's running loss and metric
  totals, so the resumed run logs what the uninterrupted one logs;
- what decides the batches and their bits, checked on resume: the number of
  samples, the batch size, the shard count.

The file stays one ``nncore.io`` archive: the entry ``meta["training"]``
(JSON; floats that may not be finite are stored as ``float.hex`` strings) and
tensors named ``training.*`` (the permutation, the history columns, the
partial totals). ``nncore.load`` ignores both; :func:`read` checks them.
"""
import math
import re

import numpy as np

from . import init as _init
from .errors import FormatError
from .serialize import is_pcg64_state, read_checkpoint

__all__ = ["capture", "read", "stateful", "PREFIX"]

PREFIX = "training."
_KEYS = {"epoch", "batch", "n_samples", "batch_size", "shards", "shuffle", "generator",
         "history", "metrics", "callbacks"}
_NAME = re.compile(r"[^\x00-\x1f]{1,200}")     # a history key or metric name


def stateful(callbacks):
    """The callbacks whose state a checkpoint keeps, in order: those with a
    ``state_dict`` method, but not Callbacks whose ``_state`` is empty."""
    return [cb for cb in callbacks
            if callable(getattr(cb, "state_dict", None)) and getattr(cb, "_state", True)]


# ---- writing ------------------------------------------------------------------

def _encode(value):
    """A callback state value as JSON: ints and None as they are, floats
    (possibly inf or NaN, which JSON cannot hold) as float.hex strings."""
    if value is None or isinstance(value, (bool, int, np.integer)):
        return None if value is None else int(value)
    return float(value).hex()


def capture(trainer, epoch, batch, partial):
    """(the header entry, the tensors) of the trainer's position: before
    batch ``batch`` of epoch ``epoch``; ``partial`` = (loss total, weight
    total, [metric totals]) of that epoch's first ``batch`` batches, or None
    at an epoch's start (the epoch's starting lr goes with it: the history
    logs it)."""
    run = trainer._run
    history = trainer.history
    par = trainer._parallel
    entry = {"epoch": int(epoch), "batch": int(batch), "n_samples": int(trainer.n_samples),
             "batch_size": int(trainer.batch_size),
             "shards": None if par is None else par.shards,
             "shuffle": trainer.rng.bit_generator.state,
             "generator": _init.get_generator().bit_generator.state,
             "history": sorted(history.keys()),
             "metrics": [m.name for m in trainer.metrics],
             "callbacks": [{"type": type(cb).__name__,
                            "state": {k: _encode(v) for k, v in cb.state_dict().items()}}
                           for cb in run["stateful"]]}
    tensors = {PREFIX + "history.epoch": np.array(history.epoch, np.int64)}
    for key in history.keys():
        tensors[PREFIX + "history." + key] = np.array(history[key], np.float64)
    if run["perm"] is not None:
        tensors[PREFIX + "perm"] = run["perm"]
    if partial is not None:
        loss_total, weight_total, metric_totals = partial
        lr = run["epoch_lr"]
        tensors[PREFIX + "partial"] = np.array(
            [loss_total, weight_total, math.nan if lr is None else lr] + metric_totals,
            np.float64)
    return entry, tensors


# ---- reading ------------------------------------------------------------------

def _is_int(value, lo=0):
    return type(value) is int and value >= lo


def _decode(value, fail, where):
    if value is None or type(value) is int:
        return value
    if isinstance(value, str):
        try:
            return float.fromhex(value)
        except ValueError:
            pass
    fail(f"{where}: expected an int, null or a float.hex string, got {value!r}")


def read(path, trainer, n_samples, callbacks, who):
    """The resume state of the checkpoint at ``path`` for this trainer and
    data, checked against them: a dict with the model's tensors, the
    optimizer state and the position (see the module docstring). Raises
    FormatError for a bad file and ValueError for one from another run
    (another batch size, data length, shard count, optimizer, callbacks)."""
    model, opt_state, entry, tensors = read_checkpoint(path)
    where = str(path)

    def fail(msg):
        raise FormatError(f"{where}: {msg}")

    def refuse(msg):
        raise ValueError(f"{who}: cannot resume from {where}: {msg}")

    if entry is None or opt_state is None:
        refuse("it holds no training position (write checkpoints with "
               "ModelCheckpoint(..., save_optimizer=True))")
    if not isinstance(entry, dict) or set(entry) != _KEYS:
        fail(f"the training entry must hold exactly {sorted(_KEYS)}")
    for key in ("epoch", "batch", "n_samples", "batch_size"):
        if not _is_int(entry[key], 1 if key in ("n_samples", "batch_size") else 0):
            fail(f"training.{key} must be an int, got {entry[key]!r}")
    if not (entry["shards"] is None or _is_int(entry["shards"], 1)):
        fail(f"training.shards must be null or an int >= 1, got {entry['shards']!r}")
    if not is_pcg64_state(entry["shuffle"]) or not is_pcg64_state(entry["generator"]):
        fail("training.shuffle and training.generator must be PCG64 generator states")
    for key in ("history", "metrics"):
        if not isinstance(entry[key], list) or not all(
                isinstance(k, str) and _NAME.fullmatch(k) for k in entry[key]):
            fail(f"training.{key} must be a list of names")
    if not isinstance(entry["callbacks"], list) or not all(
            isinstance(c, dict) and set(c) == {"type", "state"} and isinstance(c["type"], str)
            and isinstance(c["state"], dict) for c in entry["callbacks"]):
        fail("training.callbacks must be a list of {type, state} objects")

    # the run this file came from must be this one
    par = trainer._parallel
    shards = None if par is None else par.shards
    n, bs = entry["n_samples"], entry["batch_size"]
    if bs != trainer.batch_size:
        refuse(f"it was written with batch_size={bs}, this trainer has "
               f"batch_size={trainer.batch_size}; the batches (and so the weights) would differ")
    if n != n_samples:
        refuse(f"it was written training on {n} samples, this fit has {n_samples}")
    if entry["shards"] != shards:
        refuse(f"it was written with shards={entry['shards']}, this trainer has "
               f"shards={shards}; the shard count decides the summation order")
    if type(trainer.optimizer).__name__ != opt_state["type"]:
        refuse(f"it holds {opt_state['type']} state, the trainer's optimizer is a "
               f"{type(trainer.optimizer).__name__}")
    names = [m.name for m in trainer.metrics]
    if entry["metrics"] != names:
        refuse(f"it logged the metrics {entry['metrics']}, this trainer has {names}")
    kept = stateful(callbacks)
    saved_types = [c["type"] for c in entry["callbacks"]]
    types = [type(cb).__name__ for cb in kept]
    if saved_types != types:
        refuse(f"it holds the state of the callbacks {saved_types}, this fit has {types}; "
               "pass the same callbacks, in the same order")
    n_batches = -(-n // bs)
    if entry["batch"] > n_batches:
        fail(f"training.batch={entry['batch']} is past the epoch's {n_batches} batches")

    perm = tensors.pop(PREFIX + "perm", None)
    if (perm is None) == trainer.shuffle:
        refuse("it was written with shuffle=" + str(perm is not None) + ", this trainer has "
               f"shuffle={trainer.shuffle}")
    if perm is not None and (perm.dtype != np.int64 or perm.shape != (n,)
                             or not np.array_equal(np.sort(perm), np.arange(n))):
        fail(f"tensor {PREFIX}perm must be a permutation of 0..{n - 1} (int64)")
    partial = tensors.pop(PREFIX + "partial", None)
    if (partial is None) != (entry["batch"] == 0):
        fail(f"tensor {PREFIX}partial must be present exactly when training.batch > 0")
    if partial is not None and (partial.dtype != np.float64
                                or partial.shape != (3 + len(names),)):
        fail(f"tensor {PREFIX}partial must be float64 of shape ({3 + len(names)},)")
    epochs = tensors.pop(PREFIX + "history.epoch", None)
    if epochs is None or epochs.dtype != np.int64 or epochs.ndim != 1:
        fail(f"tensor {PREFIX}history.epoch must be a 1-d int64 array")
    history = {}
    for key in entry["history"]:
        column = tensors.pop(PREFIX + "history." + key, None)
        if column is None or column.dtype != np.float64 or column.shape != epochs.shape:
            fail(f"tensor {PREFIX}history.{key} must be float64 of shape {epochs.shape}")
        history[key] = [float(v) for v in column]
    if tensors:
        fail(f"unexpected tensors {sorted(tensors)[:5]}")
    states = []
    for cb, saved in zip(kept, entry["callbacks"]):
        expected = getattr(cb, "_state", None)      # a Callback's; others check their own
        if expected is not None and set(saved["state"]) != set(expected):
            fail(f"the {saved['type']} state must hold exactly {sorted(expected)}")
        states.append({k: _decode(v, fail, f"{saved['type']}.{k}")
                       for k, v in saved["state"].items()})
    return {"model": model.state_dict(), "optimizer": opt_state, "epoch": entry["epoch"],
            "batch": entry["batch"], "shuffle": entry["shuffle"],
            "generator": entry["generator"], "perm": perm,
            "partial": None if partial is None else
            (float(partial[0]), float(partial[1]), [float(v) for v in partial[3:]]),
            "epoch_lr": None if partial is None or math.isnan(partial[2]) else float(partial[2]),
            "history": ([int(e) for e in epochs], history), "callbacks": states}
