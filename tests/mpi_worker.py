"""What tests/test_distributed.py runs under ``mpiexec -n P`` (or alone,
with ``--local``, for the one-process sharded trainer).

``python mpi_worker.py train OUT [--local] [--native]``: trains every case
of CASES and a run with callbacks (checkpoints go next to OUT); rank 0
writes OUT (an .npz: each case's final tensors, history and whether every
rank ended with the same weights).
``python mpi_worker.py fault``: rank 1 raises in a callback mid-epoch.
``python mpi_worker.py badargs``: rank 1 passes X with the wrong width.
``python mpi_worker.py hang``: rank 1 hangs (sleeps) in a callback mid-epoch;
collective_timeout=2.
``python mpi_worker.py longrun DIR``: every rank writes its pid (DIR/pid.RANK), then trains
for a long time with a checkpoint (DIR/ckpt.nnc) every 10 steps, until a
test kills or interrupts one rank.
``python mpi_worker.py resume OUT DIR [--local] [--stop E,B | --from CKPT]``:
the resume case (checkpoints every 4 steps into DIR); --stop ends the run
after batch B of epoch E (from 0), --from resumes from CKPT; rank 0 writes
OUT (the final tensors and history).
"""
import hashlib
import os
import sys
import time

import numpy as np

import nncore as nn

N_FEATURES, N_CLASSES = 20, 3


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    y = (X[:, :3].argmax(axis=1) + (X[:, 3] > 1.0)) % N_CLASSES
    return X, y.astype(np.int64)


def mlp(*middle):
    return nn.Sequential(nn.Dense(N_FEATURES, 32), *middle, nn.ReLU(), nn.Dense(32, N_CLASSES))


# name: (model builder, optimizer builder, samples). Batch 32 in 4 shards:
# 202 samples end with a batch of 10 rows (shards of 2, 3, 2, 3), 194 with 2
# rows (shards of 0, 1, 0, 1: empty shards).
CASES = {
    "sgd_momentum": (lambda: mlp(), lambda: nn.SGD(lr=0.1, momentum=0.9), 202),
    "adam_dropout": (lambda: mlp(nn.Dropout(0.3)), lambda: nn.Adam(lr=1e-2), 194),
    "sgd_batchnorm": (lambda: mlp(nn.BatchNorm1d(32)),
                      lambda: nn.SGD(lr=0.05, momentum=0.9, nesterov=True), 202),
    "adam_batchnorm_dropout": (lambda: mlp(nn.BatchNorm1d(32), nn.Dropout(0.2)),
                               lambda: nn.AdamW(lr=1e-2), 202),
}


def train_case(name, comm, native):
    build, make_opt, n = CASES[name]
    # Ranks other than 0 start from other weights and generators on purpose:
    # fit must broadcast rank 0's.
    rank = 0 if comm is None else comm.Get_rank()
    nn.manual_seed(7 + 1000 * rank)
    model = build()
    X, y = data(n)
    Xv, yv = data(64, seed=1)
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), make_opt(), batch_size=32,
                         seed=3 + rank, comm=comm, shards=4, deterministic=not native)
    history = trainer.fit(X, y, epochs=3, validation_data=(Xv, yv), verbose=0)
    state = model.state_dict()
    out = {f"{name}/{key}": value for key, value in state.items()}
    for key in history.keys():
        if key not in ("seconds", "samples_per_sec"):
            out[f"{name}/history/{key}"] = np.array(history[key])
    digest = hashlib.sha256(b"".join(state[k].tobytes() for k in sorted(state))).hexdigest()
    digests = [digest] if comm is None else comm.allgather(digest)
    out[f"{name}/ranks_agree"] = np.array(len(set(digests)) == 1)
    return out


def train_with_callbacks(comm, folder):
    """EarlyStopping and ReduceLROnPlateau decide on the global loss (every
    rank stops after the same epoch); ModelCheckpoint writes on rank 0 only."""
    nn.manual_seed(11)
    model = mlp(nn.Dropout(0.1))
    X, y = data(202)
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(lr=0.1, momentum=0.9),
                         batch_size=32, seed=5, comm=comm, shards=4)
    checkpoint = nn.callbacks.ModelCheckpoint(f"{folder}/ckpt-{{epoch}}.nnc", monitor="loss",
                                              save_optimizer=True)
    history = trainer.fit(X, y, epochs=10, verbose=0, callbacks=[
        nn.callbacks.EarlyStopping(monitor="loss", min_delta=0.2, patience=1),
        nn.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0,
                                       threshold=0.4),
        checkpoint])
    saved = [len(checkpoint.saved)] if comm is None else comm.allgather(len(checkpoint.saved))
    out = {f"callbacks/{key}": value for key, value in model.state_dict().items()}
    out["callbacks/history/loss"] = np.array(history["loss"])
    out["callbacks/history/lr"] = np.array(history["lr"])
    out["callbacks/saved_on_rank_0"] = np.array(saved[0])
    out["callbacks/saved_elsewhere"] = np.array(sum(saved[1:]))
    return out


def resume_case(comm, out, folder, stop=None, resume_from=None):
    nn.manual_seed(5)
    model = mlp(nn.BatchNorm1d(32), nn.Dropout(0.2))
    X, y = data(202)                    # 7 batches of 32 per epoch
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.Adam(lr=1e-2), batch_size=32,
                         seed=9, comm=comm, shards=4)

    def stopper(batch, logs):
        if stop is not None and trainer._position == stop:
            trainer.stop_training = True
    history = trainer.fit(X, y, epochs=3, verbose=0, resume_from=resume_from, callbacks=[
        nn.callbacks.ModelCheckpoint(f"{folder}/ckpt.nnc", save_optimizer=True, save_freq=4),
        nn.callbacks.StepLR(step_size=1, gamma=0.5),
        nn.callbacks.LambdaCallback(on_batch_end=stopper)])
    if comm is None or comm.Get_rank() == 0:
        result = {f"w/{key}": value for key, value in model.state_dict().items()}
        result.update({f"history/{key}": np.array(history[key]) for key in history.keys()
                       if key not in ("seconds", "samples_per_sec")})
        np.savez(out, **result)


def main(argv):
    mode = argv[0]
    local = "--local" in argv
    comm = None
    if not local:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    if mode == "train":
        out = {}
        for name in CASES:
            out.update(train_case(name, comm, "--native" in argv))
        out.update(train_with_callbacks(comm, os.path.dirname(os.path.abspath(argv[1]))))
        if comm is None or comm.Get_rank() == 0:
            np.savez(argv[1], **out)
        return 0
    if mode == "fault":
        rank = comm.Get_rank()

        def explode(batch, logs):
            if rank == 1 and batch == 2:
                raise RuntimeError("an error on rank 1 only")
        nn.manual_seed(0)
        X, y = data(4000)
        trainer = nn.Trainer(mlp(), nn.CrossEntropyLoss(), nn.SGD(lr=0.1), batch_size=32,
                             seed=0, comm=comm)
        trainer.fit(X, y, epochs=50, verbose=0,
                    callbacks=[nn.callbacks.LambdaCallback(on_batch_end=explode)])
        print("fault: training finished, which it should not have", flush=True)
        return 0
    if mode == "hang":
        rank = comm.Get_rank()

        def hang(batch, logs):
            if rank == 1 and batch == 3:
                time.sleep(600)
        nn.manual_seed(0)
        X, y = data(4000)
        trainer = nn.Trainer(mlp(), nn.CrossEntropyLoss(), nn.SGD(lr=0.1), batch_size=32,
                             seed=0, comm=comm, collective_timeout=2)
        trainer.fit(X, y, epochs=50, verbose=0,
                    callbacks=[nn.callbacks.LambdaCallback(on_batch_end=hang)])
        print("hang: training finished, which it should not have", flush=True)
        return 0
    if mode == "badargs":
        rank = comm.Get_rank()
        X, y = data(100)
        if rank == 1:
            X = X[:, :-1]
        trainer = nn.Trainer(mlp(), nn.CrossEntropyLoss(), nn.SGD(lr=0.1), comm=comm)
        try:
            trainer.fit(X, y, verbose=0)
        except (ValueError, RuntimeError) as exc:
            print(f"rank {rank} raised {type(exc).__name__}: {exc}", flush=True)
            return 3
        return 0
    if mode == "longrun":
        rank = comm.Get_rank()
        with open(f"{argv[1]}/pid.{rank}", "w") as f:
            f.write(str(os.getpid()))
        nn.manual_seed(0)
        X, y = data(4000)
        trainer = nn.Trainer(mlp(), nn.CrossEntropyLoss(), nn.SGD(lr=0.01, momentum=0.9),
                             batch_size=32, seed=0, comm=comm, shards=4)
        checkpoint = nn.callbacks.ModelCheckpoint(f"{argv[1]}/ckpt.nnc", save_optimizer=True,
                                                  save_freq=10)
        try:
            trainer.fit(X, y, epochs=10000, verbose=0, callbacks=[checkpoint])
        except KeyboardInterrupt as exc:
            # each rank's message in a file of its own: on the shared stderr
            # pipe the two ranks' tracebacks may interleave within a line
            with open(f"{argv[1]}/interrupt.{rank}", "w") as f:
                f.write(f"{type(exc).__name__}: {exc}")
            raise
        print("longrun: training finished, which it should not have", flush=True)
        return 0
    if mode == "resume":
        stop = resume_from = None
        if "--stop" in argv:
            stop = tuple(int(v) for v in argv[argv.index("--stop") + 1].split(","))
        if "--from" in argv:
            resume_from = argv[argv.index("--from") + 1]
        resume_case(comm, argv[1], argv[2], stop, resume_from)
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
