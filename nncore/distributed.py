"""Data-parallel training on MPI through mpi4py, bitwise the same for any
number of ranks: ``Trainer(..., comm=MPI.COMM_WORLD)``.

The rule that makes 1, 2 and 4 ranks agree bit for bit: every global batch
is cut into a fixed number of shards (``shards``, independent of the rank
count; shard s holds rows ``s*m//S .. (s+1)*m//S`` of a batch of m rows), and
the shard is the unit of computation. Shard s's forward and backward run on
its own rows, from the same weights, whichever rank runs it, so its gradient
is the same bits on any rank. The shard gradients are summed by one fixed
binary tree over the shards (node [a, b) = node [a, mid) + node [mid, b),
mid = (a + b) // 2), never by MPI's reduction, whose order depends on the
rank count and the algorithm. Each rank runs its contiguous run of shards in
turn (rank r: shards ``r*S//P .. (r+1)*S//P``), sums them up to the tree
nodes that cover them (one node when they form a subtree, as with 1, 2, 4
ranks and 4 shards), and one ``Allgatherv`` per step gives every rank every
node; every rank then finishes the same tree with the same NumPy adds. The
same nodes hold the same bits whichever rank computed them, so the sum is
independent of the rank count. One process (``comm=None`` with
``shards=S``) sums the whole tree itself: the same numbers again. (This is
not the unsharded trainer's result: its one batch-wide GEMM sums the rows in
another order; with ``shards=1`` and no Dropout it is.)

Per step a rank sends, llm.c style, one flat buffer: its tree nodes'
``[gradients | BatchNorm running statistics]`` and, per shard, ``[loss
(float64 bits), rows, stop flag | the shard's outputs]``, so that the
history's loss and metrics are computed from every shard's outputs,
identically on every rank. With 2 ranks the gradient traffic equals a ring
Allreduce's (each rank receives one gradient); with P ranks an all-gather
moves (P - 1) gradients to each rank where a ring Allreduce moves 2 (P - 1) / P
(docs/distributed.md), so at scale this exchange wants a reduce-scatter of
tree nodes instead.

- Mean: each shard's output gradient (the gradient of the shard's mean loss)
  is scaled by ``rows_s / m`` before its backward, so the shard gradients
  sum to the gradient of the global batch's mean loss.
- Dropout: shard s of a step draws its masks from ``init.key_stream(key, s)``
  with one key per step from nncore's seeded generator (kept in step on every
  rank: rank 0's generator state is broadcast at the start of ``fit``).
- BatchNorm: batch statistics per shard (each shard normalises over its own
  rows, "ghost batch norm"). Every shard starts from the step's running
  statistics; the step ends with their mean over the non-empty shards'
  updated values, summed by the same tree.
- ``deterministic=False``: each rank sums its own shards and MPI's native
  ``Allreduce`` sums over ranks (its order depends on the rank count and the
  MPI library), plus a small ``Allgatherv`` of the losses and outputs.

Faults: an exception on one rank while others may be waiting in a collective
(a failing forward, a callback that raises on one rank) prints the rank and
the traceback and calls ``comm.Abort``, so the job ends at once instead of
hanging. Errors every rank raises at the same point (bad arguments, checked
together before any collective; a non-finite global loss; an interrupt) are
raised normally on every rank. Ctrl-C (SIGINT) on one rank sets a flag that
the next step's exchange carries to every rank: all stop after that step. A
rank that dies is the launcher's to notice (MPICH's Hydra kills the other
ranks at once). A rank that hangs without dying is caught only by
``collective_timeout``: a watchdog thread aborts the job when this rank has
waited longer than that in one of fit's collectives.

mpi4py is imported only when a communicator is given: ``import nncore`` never
loads MPI.
"""
import contextlib
import math
import numbers
import sys
import threading
import time
import traceback

import numpy as np

from . import _core
from . import init as _init
from .errors import NonFiniteLossError
from .validation import all_finite, check_targets

__all__ = ["DataParallel", "DEFAULT_SHARDS"]

DEFAULT_SHARDS = 4
# The front of a shard's row of extras (its outputs follow): the loss as the
# two float32 halves of its float64 bits, the shard's row count, the stop flag.
_META = 4
# stop flags a rank sends with its shards; rank r's Ctrl-C is _INTERRUPTED + r
_GO, _STOP, _INTERRUPTED = 0, 1, 2


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("Trainer(comm=...): data-parallel training needs mpi4py "
                          "(pip install 'nncore[mpi]')") from exc
    return MPI


# How long a rank that aborts the job waits after writing its message: the
# launcher forwards each rank's stderr through a proxy, and MPI_Abort kills
# the job at once, so a message written just before it could be lost (seen
# with MPICH's Hydra under load: the job ended with an empty stderr).
_ABORT_GRACE_SECONDS = 0.5


def _abort_job(comm):
    """End the whole MPI job after this rank's message had time to arrive."""
    sys.stderr.flush()
    time.sleep(_ABORT_GRACE_SECONDS)
    comm.Abort(1)


def collective(exc):
    """Mark ``exc`` as raised by every rank at the same point: the guard lets
    it through instead of aborting the job."""
    exc._nncore_collective = True
    return exc


class DataParallel:
    """The sharded training step behind ``Trainer(comm=..., shards=...)``
    (see the module docstring). ``comm``: an mpi4py communicator or None
    (one process runs every shard); ``shards``: the number of shards a
    global batch is cut into (at most the batch size; at least the number of
    ranks); ``deterministic``: the fixed-order sum (True) or MPI's Allreduce."""

    def __init__(self, comm, shards=None, deterministic=True, collective_timeout=None):
        if collective_timeout is not None:
            if comm is None:
                raise ValueError("Trainer: collective_timeout is for data-parallel training "
                                 "(pass comm)")
            if (isinstance(collective_timeout, bool)
                    or not isinstance(collective_timeout, numbers.Real)
                    or not 0 < collective_timeout < math.inf):
                raise ValueError(f"Trainer: collective_timeout must be a number of seconds "
                                 f"> 0 or None, got {collective_timeout!r}")
        self.timeout = collective_timeout
        self._deadline = None       # when the collective this rank waits in times out
        if shards is None:
            shards = DEFAULT_SHARDS
        if isinstance(shards, bool) or not isinstance(shards, numbers.Integral) or shards < 1:
            raise ValueError(f"Trainer: shards must be an int >= 1, got {shards!r}")
        self.shards = int(shards)
        self.deterministic = bool(deterministic)
        self.comm = comm
        self.interrupted_rank = None    # the rank whose SIGINT stopped the run
        if comm is None:
            self.MPI, self.rank, self.size = None, 0, 1
        else:
            if not (callable(getattr(comm, "Get_rank", None))
                    and callable(getattr(comm, "Allgatherv", None))):
                raise TypeError(f"Trainer: comm must be an mpi4py communicator (e.g. "
                                f"MPI.COMM_WORLD) or None, got {type(comm).__name__}")
            self.MPI = _mpi()
            self.rank, self.size = comm.Get_rank(), comm.Get_size()
        if self.size > self.shards:
            raise ValueError(f"Trainer: {self.size} ranks but shards={self.shards}; every rank "
                             "needs a shard (pass shards >= the number of ranks)")

    @property
    def is_root(self):
        return self.rank == 0

    # ---- agreement and faults ---------------------------------------------
    def raise_together(self, exc):
        """Every rank calls this once, at the same point, with the exception
        it caught (or None): if any rank failed, every rank raises (its own
        exception, or a RuntimeError naming the first rank that failed)."""
        if self.comm is None or self.size == 1:
            if exc is not None:
                raise collective(exc)
            return
        message = None if exc is None else f"{type(exc).__name__}: {exc}"
        messages = self.comm.allgather(message)
        if exc is not None:
            raise collective(exc)
        for rank, message in enumerate(messages):
            if message is not None:
                raise collective(RuntimeError(
                    f"Trainer.fit: rank {rank} of {self.size} failed: {message}"))

    @contextlib.contextmanager
    def guard(self):
        """Abort the MPI job when an exception that not every rank shares
        escapes: the others may be waiting for this rank in a collective.
        With a collective_timeout, the watchdog runs while inside."""
        stop = None
        if self.timeout is not None and self.comm is not None and self.size > 1:
            stop = threading.Event()
            threading.Thread(target=self._watch, args=(stop,), daemon=True,
                             name="nncore-collective-watchdog").start()
        try:
            yield
        except BaseException as exc:
            if self.comm is not None and self.size > 1 \
                    and not getattr(exc, "_nncore_collective", False):
                self._abort(exc)
            raise
        finally:
            if stop is not None:
                stop.set()

    def _watch(self, stop):
        """The watchdog thread: abort the job once the collective this rank
        waits in has taken longer than the timeout (another rank hangs, or
        died without the launcher ending the job). mpi4py releases the GIL
        in MPI calls, so this runs while the main thread waits."""
        while not stop.wait(min(1.0, self.timeout / 4)):
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                sys.stderr.write(
                    f"nncore.distributed: rank {self.rank} of {self.size} waited more than "
                    f"collective_timeout={self.timeout:g} s in a collective of Trainer.fit "
                    f"(another rank hangs or died); aborting the MPI job (comm.Abort)\n")
                _abort_job(self.comm)
                return

    @contextlib.contextmanager
    def _waiting(self):
        """Around each of fit's collectives: the watchdog's deadline."""
        if self.timeout is None:
            yield
            return
        self._deadline = time.monotonic() + self.timeout
        try:
            yield
        finally:
            self._deadline = None

    def _abort(self, exc):
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(
            f"nncore.distributed: rank {self.rank} of {self.size} failed during Trainer.fit; "
            f"aborting the MPI job (comm.Abort) so that the other ranks do not wait "
            f"forever in a collective:\n{text}")
        _abort_job(self.comm)

    # ---- the start of fit ---------------------------------------------------
    def share(self, obj):
        """rank 0's ``obj`` on every rank (a resumed run's checkpoint, read
        on rank 0 only: the ranks need not share a file system)."""
        return obj if self.comm is None else self.comm.bcast(obj, root=0)

    def check(self, trainer, X, y, who):
        """(X, y) validated. A ``np.memmap`` X is checked for shape and
        dtype only and stays mapped: each rank later reads, converts and
        checks only the rows of its shards. Other arrays go through the
        trainer's usual check (a float32 C-contiguous copy when needed)."""
        if not isinstance(X, np.memmap):
            return trainer._check(X, y, who)
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{who}: X is a memmap of dtype {X.dtype}; expected numbers")
        sample = getattr(trainer.model, "input_shape", None)
        if isinstance(sample, int):
            sample = (sample,)
        if X.ndim < 2 or len(X) == 0 or (sample is not None and X.shape[1:] != tuple(sample)):
            raise ValueError(f"{who}: X has shape {X.shape}, expected (n >= 1, "
                             f"*{tuple(sample) if sample else '...'})")
        output_shape = getattr(trainer.model, "output_shape", None)
        shape = output_shape(X.shape[1:]) if callable(output_shape) else None
        n_out = shape[0] if shape is not None and len(shape) == 1 else None
        trainer._n_outputs = n_out
        return X, check_targets(y, len(X), n_out, trainer.kind, who)

    def start(self, trainer):
        """Every rank takes rank 0's weights, running statistics, optimizer
        state and random generators (the trainer's, for the permutations, and
        nncore's, for Dropout), after checking that the models match."""
        comm = self.comm
        if comm is None:
            return
        model, optimizer = trainer.model, trainer.optimizer
        tensors = [p for p, _ in model.parameters()] + [b for _, b in model.named_buffers()]
        layout = [(t.shape, str(t.dtype)) for t in tensors]
        layouts = comm.allgather(layout)
        for rank, other in enumerate(layouts):
            if other != layouts[0]:
                raise collective(ValueError(
                    f"Trainer.fit: the model on rank {rank} has tensors {other}, rank 0's "
                    f"{layouts[0]}; every rank must build the same model"))
        flat = np.concatenate([t.reshape(-1) for t in tensors]).astype(np.float32)
        comm.Bcast([flat, self.MPI.FLOAT], root=0)
        offset = 0
        for t in tensors:
            t.reshape(-1)[...] = flat[offset:offset + t.size]
            offset += t.size
        states = comm.bcast((trainer.rng.bit_generator.state,
                             _init.get_generator().bit_generator.state,
                             self._optimizer_state(optimizer, model)), root=0)
        trainer.rng.bit_generator.state = states[0]
        _init.get_generator().bit_generator.state = states[1]
        if states[2] is not None and not self.is_root:
            optimizer.load_state_dict(states[2], model.parameters())

    @staticmethod
    def _optimizer_state(optimizer, model):
        state_dict = getattr(optimizer, "state_dict", None)
        return state_dict(model.parameters()) if callable(state_dict) else None

    def plan(self, trainer, X, y):
        """Buffers every step of one fit reuses, allocated once, and the
        layout of the step's collective."""
        model = trainer.model
        n = len(X)
        bs = min(trainer.batch_size, n)
        S = min(self.shards, bs)
        P = self.size
        if P > S:
            raise collective(ValueError(
                f"Trainer.fit: {P} ranks but only {S} shard(s) per batch "
                f"(batch of {bs} rows, shards={self.shards})"))
        first, last = self.rank * S // P, (self.rank + 1) * S // P
        params = model.parameters()
        buffers = [b for _, b in model.named_buffers()]
        for b in buffers:
            if b.dtype != np.float32 or not b.flags.c_contiguous:
                raise collective(TypeError(
                    f"Trainer.fit: sharded training needs float32 C-contiguous buffers, "
                    f"got {b.dtype}"))
        output_shape = getattr(model, "output_shape", None)
        if not callable(output_shape):
            raise collective(TypeError(
                f"Trainer.fit: sharded training needs a model with output_shape() "
                f"(Sequential has it), got {type(model).__name__}"))
        out_shape = tuple(output_shape(X.shape[1:]))
        out_size = int(np.prod(out_shape, dtype=np.int64))
        rows = -(-bs // S)                    # the largest shard
        G = sum(g.size for _, g in params)
        K = sum(b.size for b in buffers)
        GK = G + K
        E = _META + rows * out_size           # a shard's metadata and outputs
        owned = last - first
        p = {"bs": rows, "S": S, "batch": bs, "first": first, "last": last,
             "params": params, "buffers": buffers, "G": G, "K": K,
             "out_shape": out_shape, "out_size": out_size,
             "shard": np.zeros((owned, GK), np.float32),     # each shard's grads | buffers
             "acc": np.empty(GK, np.float32),
             "scratch": np.empty((max(1, S.bit_length()) + 1, GK), np.float32),
             "snap": np.empty(K, np.float32),
             "x": np.empty((owned * rows,) + X.shape[1:], np.float32),
             "out": np.empty((bs,) + out_shape, np.float32),
             "perm": np.arange(n),
             "y": np.empty_like(y)}
        p["x_flat"] = p["x"].reshape(len(p["x"]), -1)
        # float32 rows (in memory, or mapped: then checked per batch) are
        # gathered by the C kernel; other mapped dtypes by NumPy, converting
        p["mapped"] = isinstance(X, np.memmap)
        p["X_flat"] = X.reshape(n, -1) \
            if X.dtype == np.float32 and X.flags.c_contiguous else None
        p["leaves"] = {(first + j, first + j + 1): p["shard"][j] for j in range(owned)}
        if self.comm is None:
            p["extra"] = np.zeros((owned, E), np.float32)
            p["extras"] = list(p["extra"])
        elif self.deterministic:
            # This rank sends the sums of the tree nodes that cover its shards
            # (one node when its shards are a subtree), then its shards' extras.
            covers = [_cover(r * S // P, (r + 1) * S // P, 0, S) for r in range(P)]
            counts = [len(covers[r]) * GK + ((r + 1) * S // P - r * S // P) * E
                      for r in range(P)]
            displs = [sum(counts[:r]) for r in range(P)]
            p["send"] = send = np.zeros(counts[self.rank], np.float32)
            p["pieces"] = [(node, send[i * GK:(i + 1) * GK])
                           for i, node in enumerate(covers[self.rank])]
            p["extra"] = send[len(covers[self.rank]) * GK:].reshape(owned, E)
            p["recv"] = recv = np.empty(sum(counts), np.float32)
            p["spec"] = (counts, displs)
            p["known"], p["extras"] = {}, []
            for r in range(P):
                at = displs[r]
                for node in covers[r]:
                    p["known"][node] = recv[at:at + GK]
                    at += GK
                p["extras"] += list(recv[at:displs[r] + counts[r]].reshape(-1, E))
        else:
            p["extra"] = np.zeros((owned, E), np.float32)
            p["recv_extra"] = np.empty((S, E), np.float32)
            p["extras"] = list(p["recv_extra"])
            counts = [((r + 1) * S // P - r * S // P) * E for r in range(P)]
            p["spec"] = (counts, [r * S // P * E for r in range(P)])
        return p

    # ---- the end of an epoch --------------------------------------------------
    def share_timing(self, logs):
        """The epoch's wall times in the logs: rank 0's on every rank, so
        that the history is the same everywhere."""
        if self.comm is not None:
            with self._waiting():
                logs["seconds"], logs["samples_per_sec"] = self.comm.bcast(
                    (logs["seconds"], logs["samples_per_sec"]), root=0)

    def agree_stop(self, trainer):
        """After the epoch's callbacks: stop every rank if any rank stops
        (a callback that decided differently there, a Ctrl-C received on
        one rank between the epoch's last step and now)."""
        if self.comm is None:
            return
        with self._waiting():
            flags = self.comm.allgather((bool(trainer.stop_training),
                                         bool(trainer._interrupted)))
        trainer.stop_training = any(stop for stop, _ in flags)
        interrupted = [rank for rank, (_, flag) in enumerate(flags) if flag]
        if interrupted and self.interrupted_rank is None:
            self.interrupted_rank = interrupted[0]
        trainer._interrupted = bool(interrupted)

    # ---- one epoch -----------------------------------------------------------
    def _gather_rows(self, X, index, plan):
        """The rows ``X[index]`` as float32 in the front of plan["x"]."""
        m = len(index)
        rows = plan["x"][:m]
        if plan["X_flat"] is not None:
            _core.gather_rows(plan["X_flat"], index, plan["x_flat"][:m])
            if not plan["mapped"]:          # validated in memory already
                return rows
        else:
            # a memmap of another dtype: read only these rows and convert them
            np.copyto(rows, np.take(X, index, axis=0), casting="unsafe")
        if not all_finite(rows):
            raise ValueError("Trainer.fit: input X contains NaN or infinity (in a row of "
                             "the memory-mapped data)")
        return rows

    def train_epoch(self, trainer, X, y, epoch, hooks, plan, at=None):
        """One pass over the data; returns the epoch's (global) loss and
        metrics, the same on every rank. ``at``: as Trainer._train_epoch's
        (the rest of an epoch a checkpoint stopped in)."""
        model, loss, optimizer = trainer.model, trainer.loss, trainer.optimizer
        skip_input_grad = trainer._skip_input_grad
        model.train()
        params, buffers = plan["params"], plan["buffers"]
        G, K, S, bs = plan["G"], plan["K"], plan["S"], plan["batch"]
        first, last = plan["first"], plan["last"]
        shard, extra, snap = plan["shard"], plan["extra"], plan["snap"]
        out_shape, out_size, out_batch = plan["out_shape"], plan["out_size"], plan["out"]
        n = len(X)
        n_batches = -(-n // bs)
        perm = plan["perm"]
        b0 = 0 if at is None else at[0]
        if trainer.shuffle and b0 == 0:     # a resumed epoch has its permutation
            trainer.rng.shuffle(perm)
        targets = np.take(y, perm, axis=0, out=plan["y"], mode="clip")
        metrics = trainer.metrics
        for metric in metrics:
            metric.begin(targets)

        total = 0.0
        if at is not None:
            total = at[1][0]
            for metric, value in zip(metrics, at[1][2]):
                metric.resume(value, min(b0 * bs, n))
        for b in range(b0, n_batches):
            lo, hi = b * bs, min((b + 1) * bs, n)
            m = hi - lo
            bounds = [lo + s * m // S for s in range(S + 1)]
            x = self._gather_rows(X, perm[bounds[first]:bounds[last]], plan)
            # One key per step on every rank; the shards' Dropout keys derive from it.
            key = _init.next_key()
            flag = _INTERRUPTED + self.rank if trainer._interrupted else (
                _STOP if trainer.stop_training else _GO)
            if K:
                _flatten(buffers, snap)
            for j, s in enumerate(range(first, last)):
                lo_s, hi_s = bounds[s], bounds[s + 1]
                rows = hi_s - lo_s
                meta = extra[j, :_META]
                meta[2], meta[3] = rows, flag
                if rows == 0:               # a short last batch: an empty shard adds 0
                    shard[j] = 0.0
                    meta[:2] = np.zeros(1, np.float64).view(np.float32)
                    continue
                if K:                       # every shard starts from the step's statistics
                    _unflatten(snap, buffers)
                with _init.key_stream(key, s):
                    out = model.forward(x[lo_s - bounds[first]:hi_s - bounds[first]])
                value = loss.forward(out, targets[lo_s:hi_s])
                grad = loss.backward()
                if rows != m:
                    # the shard mean's gradient, as a share of the batch mean
                    np.multiply(grad, np.float32(rows / m), out=grad)
                if skip_input_grad:
                    model.backward(grad, input_grad=False)
                else:
                    model.backward(grad)
                _flatten([g for _, g in params], shard[j, :G])
                if K:
                    _flatten(buffers, shard[j, G:])
                meta[:2] = np.array([value], np.float64).view(np.float32)
                extra[j, _META:_META + rows * out_size] = out.reshape(-1)
            extras = self._exchange(plan)

            # The global loss, outputs and stop flags, in shard order.
            batch_total, flags, nonempty = 0.0, _GO, 0
            for s in range(S):
                rows = int(extras[s][2])
                flag = int(extras[s][3])
                # the first rank interrupted, in shard (so rank) order
                flags = flag if flags < _INTERRUPTED and flag > flags else flags
                if rows == 0:
                    continue
                nonempty += 1
                batch_total += float(extras[s][:2].copy().view(np.float64)[0]) * rows
                out_batch[bounds[s] - lo:bounds[s + 1] - lo] = \
                    extras[s][_META:_META + rows * out_size].reshape((rows,) + out_shape)
            value = batch_total / m
            if not math.isfinite(value):
                raise collective(NonFiniteLossError(
                    f"Trainer.fit: the loss became {value} at epoch {epoch + 1}, batch "
                    f"{b + 1} of {n_batches} (counting from 1); the learning rate may be "
                    f"too high (lr={getattr(optimizer, 'lr', '?')}) or the inputs badly scaled"))
            self._reduce(plan, nonempty)
            acc = plan["acc"]
            _unflatten(acc[:G], [g for _, g in params])
            if K:
                _unflatten(acc[G:], buffers)
            optimizer.step(params)

            for metric in metrics:
                metric.update(out_batch[:m], lo, hi)
            total += batch_total
            if flags != _GO:
                trainer.stop_training = True
                if flags >= _INTERRUPTED:
                    trainer._interrupted = True
                    if self.interrupted_rank is None:
                        self.interrupted_rank = flags - _INTERRUPTED
            if hooks:
                # where a checkpoint taken by a hook is (Trainer.training_position)
                trainer._position = (epoch, b + 1)
                trainer._run["partial"] = (total, hi, hi)
                logs = {"batch": b, "size": m, "loss": value}
                for hook in hooks:
                    hook(b, logs)
            if trainer.stop_training:
                trainer._position = (epoch, b + 1 if hi < n else None)
                return _epoch_logs(total, metrics, hi)
        trainer._position = (epoch, None)
        return _epoch_logs(total, metrics, n)

    def _exchange(self, plan):
        """The step's one collective; returns every shard's metadata and
        outputs (a list of S rows), on every rank."""
        comm = self.comm
        if comm is None:
            return plan["extras"]
        MPI = self.MPI
        if self.deterministic:
            for (a, b), out in plan["pieces"]:
                _tree_sum(a, b, plan["leaves"], out, plan["scratch"])
            with self._waiting():
                comm.Allgatherv([plan["send"], MPI.FLOAT],
                                [plan["recv"], plan["spec"], MPI.FLOAT])
            return plan["extras"]
        # native: this rank's shards summed here, the ranks summed by MPI
        acc = plan["acc"]
        _tree_sum(plan["first"], plan["last"], plan["leaves"], acc, plan["scratch"])
        with self._waiting():
            comm.Allreduce(MPI.IN_PLACE, [acc, MPI.FLOAT], op=MPI.SUM)
            comm.Allgatherv([plan["extra"], MPI.FLOAT],
                            [plan["recv_extra"], plan["spec"], MPI.FLOAT])
        return plan["extras"]

    def _reduce(self, plan, nonempty):
        """plan["acc"] = the sum of the shards' gradients and the mean of
        their running statistics, both by the fixed tree over the shards
        (the native mode summed them in _exchange)."""
        G, K, acc, S = plan["G"], plan["K"], plan["acc"], plan["S"]
        if self.comm is None:
            _tree_sum(0, S, plan["leaves"], acc, plan["scratch"])
        elif self.deterministic:
            _tree_sum(0, S, plan["known"], acc, plan["scratch"])
        if K:
            np.divide(acc[G:], np.float32(nonempty), out=acc[G:])


def _cover(first, last, a, b):
    """The nodes of the summation tree over shards [a, b) (node [a, b) has
    the children [a, mid) and [mid, b), mid = (a + b) // 2) that exactly
    cover the shards [first, last): the largest ones, left to right."""
    if last <= a or b <= first or first >= last:
        return []
    if first <= a and b <= last:
        return [(a, b)]
    mid = (a + b) // 2
    return _cover(first, last, a, mid) + _cover(first, last, mid, b)


def _tree_sum(a, b, known, out, scratch, depth=0):
    """out = the sum of the shards [a, b) by the fixed binary tree: node
    [a, b) is node [a, mid) + node [mid, b), mid = (a + b) // 2, unless its
    value is in ``known`` ({(a, b): array}, the leaves (s, s + 1) at least).
    The same nodes give the same bits, whichever rank computed them: this is
    what makes the result independent of the rank count. scratch[depth] holds
    a right child while its parent adds it."""
    value = known.get((a, b))
    if value is not None:
        np.copyto(out, value)
        return
    mid = (a + b) // 2
    _tree_sum(a, mid, known, out, scratch, depth + 1)
    right = scratch[depth]
    _tree_sum(mid, b, known, right, scratch, depth + 1)
    np.add(out, right, out=out)


def _flatten(arrays, out):
    """Copy the arrays one after another into the flat ``out``."""
    offset = 0
    for a in arrays:
        out[offset:offset + a.size] = a.reshape(-1)
        offset += a.size


def _unflatten(flat, arrays):
    """Copy consecutive pieces of ``flat`` into the arrays, in place."""
    offset = 0
    for a in arrays:
        a.reshape(-1)[...] = flat[offset:offset + a.size]
        offset += a.size


def _epoch_logs(total, metrics, seen):
    logs = {"loss": total / seen}
    for metric in metrics:
        logs[metric.name] = metric.result(seen)
    return logs
