"""The command line: python -m nncore <command>."""
import argparse
import sys


def cmd_info(args):
    import nncore
    for key, value in nncore.info().items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:>14}: {value}")
    return 0


# The bench families with a --precision bf16 mode.
BF16_FAMILIES = ("gemm", "train")


def cmd_bench(args):
    import json

    from . import bench
    from . import _core
    if args.plot:     # fail before a long run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --plot needs matplotlib: pip install 'nncore[plot]'", file=sys.stderr)
            return 2
    if args.isa:
        _core.set_isa(args.isa)
    peers = args.peers.split(",") if args.peers is not None else None
    families = bench.ORDER if args.family == "all" else (args.family,)
    options = {}
    if args.precision != "float32":
        if args.family not in BF16_FAMILIES:
            print(f"error: --precision {args.precision} is for the families "
                  f"{' and '.join(BF16_FAMILIES)}, not {args.family}", file=sys.stderr)
            return 2
        options["precision"] = args.precision
    # Import the peers first so that their thread pools get limited too.
    bench.available_peers(peers)
    with bench.thread_limits(args.threads):
        env = bench.environment(args.threads, quick=args.quick or args.tiny)
    print(f"{env['cpu']}; {env['cores']} cores; nncore {env['versions']['nncore']} "
          f"isa={env['isa']}; {args.threads} threads; "
          + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if k != "nncore"))
    core = env["core_to_core_ns"]
    print(f"FMA peak {env['peak_gflops']:.0f} GFLOP/s, memory bandwidth (triad) "
          f"{env['memory_bandwidth_gbs']:.1f} GB/s at {args.threads} threads"
          + (f", a cache line core to core in {core:.0f} ns" if core else "")
          + f"; load average {', '.join(f'{v:.1f}' for v in env['load_average'] or ())}")
    if options:
        with bench.thread_limits(args.threads):
            env["bf16_peak_gflops"] = bench.bf16_peak_gflops(args.threads,
                                                             quick=args.quick or args.tiny)
        hw = _core.bf16_info()
        peak = env["bf16_peak_gflops"]
        print(f"bf16: kernel {hw['kernel']}, AMX {'present' if hw['amx'] else 'absent'}"
              f" (no AMX kernel); bf16 peak (vdpbf16ps) "
              + (f"{peak:.0f} GFLOP/s" if peak else "none (no AVX512_BF16)"))

    def log(row):
        print(f"  {row['family']:<6} {row['case']}: nncore {row['nncore_s'] * 1e6:.1f} us"
              + "".join(f", x{p} {row[f'ratio_{p}']:.2f}" for p in bench.SIDES
                        if f"ratio_{p}" in row)
              + (f", core to core {row['core_to_core_ns']:.0f} ns"
                 if "core_to_core_ns" in row else "")
              + (" (noisy)" if row.get("noisy") else ""), file=sys.stderr, flush=True)
    results = {}
    for name in families:
        print(f"\n== {name}: {bench.FAMILIES[name][1]}", flush=True)
        results[name] = bench.run(name, quick=args.quick, threads=args.threads, peers=peers,
                                  tiny=args.tiny, log=None if args.tiny else log, **options)
        print(bench.format_table(results[name]), flush=True)
    if args.json:
        rows = [r for name in families for r in results[name]]
        with open(args.json, "w") as f:
            json.dump({"environment": env, "machine": bench.machine(), "quick": args.quick,
                       "command": "python -m nncore bench " + " ".join(args.argv),
                       "families": results, "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            for name in families:
                f.write(f"**{name}** ({bench.FAMILIES[name][1]})\n\n")
                f.write(bench.format_markdown(results[name]) + "\n\n")
        print(f"wrote {args.markdown}")
    if args.plot:
        bench.plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _model_for(n_in, hidden, n_out, activation="relu"):
    """A Sequential MLP: Dense + activation per hidden layer, a linear output."""
    import nncore as nn
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Dense(width, h), acts[activation]()]
        width = h
    layers.append(nn.Dense(width, n_out))
    return nn.Sequential(*layers)


def _optimizer_for(name, lr, momentum, weight_decay):
    import nncore as nn
    if name == "sgd":
        return nn.SGD(lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return nn.Adam(lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return nn.AdamW(lr=lr, weight_decay=weight_decay)
    return nn.RMSprop(lr=lr, momentum=momentum, weight_decay=weight_decay)


# Set by mpiexec/mpirun in every rank's environment: MPICH's Hydra (PMI_SIZE),
# Open MPI (OMPI_COMM_WORLD_SIZE). `train` then trains data-parallel.
_MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def _mpi_world():
    """MPI.COMM_WORLD when launched by mpiexec, else None."""
    import os
    if not any(os.environ.get(name) for name in _MPI_SIZE_VARIABLES):
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise SystemExit("error: launched by mpiexec, but mpi4py is not installed "
                         "(pip install 'nncore[mpi]')") from None
    return MPI.COMM_WORLD


def _threads_per_rank(comm):
    """The cores this process may use shared among the ranks on its node:
    OpenMP's default of one thread per core in every rank would put several
    spinning threads on each core."""
    import os
    from mpi4py import MPI
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    return max(1, cores // local)


# --model of `train`: the conv nets take NCHW images (datasets' flatten=False).
MODELS = ("mlp", "cnn", "resnet20")
_CONV_NAMES = {"cnn": "small CNN", "resnet20": "ResNet-20"}


def _conv_model_for(name, image_shape, n_classes):
    """The small CNN (sized for the image) or ResNet-20 for (C, H, W) images."""
    import nncore as nn
    channels, size = image_shape[0], image_shape[1]
    if name == "cnn":
        return nn.models.small_cnn(in_channels=channels, num_classes=n_classes,
                                   image_size=size)
    return nn.models.resnet(20, in_channels=channels, num_classes=n_classes)


def _train_and_report(X_train, y_train, X_test, y_test, *, hidden, epochs, batch_size, lr,
                      optimizer, momentum, weight_decay, activation, seed, threads, out,
                      verbose, comm=None, shards=None, model="mlp", checkpoint=None,
                      checkpoint_every=None, resume=False, precision="float32"):
    """Train a classifier (an MLP, or with model="cnn"/"resnet20" a conv net on
    NCHW images), print test accuracy, throughput and time, save it. With
    ``comm`` (under mpiexec) every rank trains its share; rank 0 alone prints
    and saves. ``checkpoint``: a ModelCheckpoint file (every
    ``checkpoint_every`` batches, else per epoch) that ``resume`` continues
    from, bitwise, when it exists."""
    import time
    import numpy as np
    import nncore as nn
    if threads is not None:
        nn.set_num_threads(threads)
    nn.manual_seed(seed)
    root = comm is None or comm.Get_rank() == 0
    say = print if root else (lambda *args, **kwargs: None)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    name = model
    if name == "mlp":
        model = _model_for(X_train.shape[1], hidden, n_classes, activation)
        arch = "-".join(str(n) for n in (X_train.shape[1],) + tuple(hidden) + (n_classes,))
    else:
        model = _conv_model_for(name, X_train.shape[1:], n_classes)
        arch = (f"{_CONV_NAMES[name]} ({'x'.join(map(str, X_train.shape[1:]))} -> "
                f"{n_classes})")
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(),
                         _optimizer_for(optimizer, lr, momentum, weight_decay),
                         batch_size=batch_size, seed=seed, comm=comm, shards=shards,
                         precision=precision)
    parallel = ""
    if comm is not None or shards is not None:
        ranks = 1 if comm is None else comm.Get_size()
        parallel = (f", {ranks} MPI rank(s) x {trainer._parallel.shards} shards per batch")
    say(f"training {arch} on {len(X_train)} samples, {optimizer} lr={lr}, batch "
        f"{batch_size}, {nn.get_num_threads()} thread(s), {nn.info()['isa']} kernels"
        f"{parallel}" + (f", {precision} training" if precision != "float32" else ""))
    callbacks, resume_from = [], None
    if checkpoint:
        import os
        callbacks.append(nn.callbacks.ModelCheckpoint(
            checkpoint, save_optimizer=True, save_freq=checkpoint_every or "epoch"))
        if resume and os.path.exists(checkpoint):
            resume_from = checkpoint
            say(f"resuming from {checkpoint}")
    start = time.perf_counter()
    try:
        history = trainer.fit(X_train, y_train, epochs, validation_data=(X_test, y_test),
                              verbose=verbose, callbacks=callbacks, resume_from=resume_from)
    except KeyboardInterrupt as exc:
        # every rank stops after the same step; one message, no traceback
        say(f"{exc}" + (f"; resume with --checkpoint {checkpoint} --resume"
                        if checkpoint else ""))
        return 130
    seconds = time.perf_counter() - start
    test = trainer.evaluate(X_test, y_test)
    train_seconds = sum(len(X_train) / rate for rate in history["samples_per_sec"])
    throughput = len(X_train) * len(history) / train_seconds
    say(f"test accuracy {test['accuracy']:.4f} (loss {test['loss']:.4f}) after "
        f"{len(history)} epochs in {seconds:.2f} s; training throughput "
        f"{throughput:,.0f} samples/s")
    if out and root:
        nn.save(model, out)
        again = nn.load(out)
        same = np.array_equal(again.predict(X_test), model.predict(X_test))
        print(f"saved to {out} (reloaded: predictions {'identical' if same else 'DIFFER'})")
        if not same:
            return 1
    return 0


def _hidden_sizes(text):
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}")
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be >= 1, got {text!r}")
    return sizes


def cmd_demo(args):
    """Train on the built-in digits: a few seconds, end to end."""
    import nncore as nn
    X, y = nn.datasets.load_digits()
    X_train, X_test, y_train, y_test = nn.datasets.train_test_split(
        X, y, test_size=0.25, seed=args.seed, stratify=True)
    print(f"nncore {nn.__version__} demo: UCI handwritten digits (8x8, built in), "
          f"{len(X_train)} training / {len(X_test)} test images")
    return _train_and_report(X_train, y_train, X_test, y_test, hidden=(128,),
                             epochs=args.epochs, batch_size=32, lr=0.05, optimizer="sgd",
                             momentum=0.9, weight_decay=0.0, activation="relu",
                             seed=args.seed, threads=args.threads, out=args.out,
                             verbose=1)


def cmd_train(args):
    """Train a classifier (an MLP, the small CNN or ResNet-20) on Fashion-MNIST
    or the digits."""
    import nncore as nn
    if args.shards is not None and args.shards < 1:
        print(f"error: --shards must be >= 1, got {args.shards}", file=sys.stderr)
        return 2
    if (args.checkpoint_every is not None or args.resume) and not args.checkpoint:
        print("error: --checkpoint-every and --resume need --checkpoint PATH", file=sys.stderr)
        return 2
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        print(f"error: --checkpoint-every must be >= 1, got {args.checkpoint_every}",
              file=sys.stderr)
        return 2
    comm = _mpi_world()
    if comm is not None and args.threads is None:
        args.threads = _threads_per_rank(comm)
    if args.model != "mlp" and (args.hidden is not None or args.activation is not None):
        print(f"error: --hidden and --activation are for --model mlp, not --model "
              f"{args.model}", file=sys.stderr)
        return 2
    flatten = args.model == "mlp"       # the conv nets take (N, 1, H, W) images
    if args.data == "digits":
        X, y = nn.datasets.load_digits(flatten=flatten)
        X_train, X_test, y_train, y_test = nn.datasets.train_test_split(
            X, y, test_size=0.25, seed=args.seed, stratify=True)
    else:
        try:
            train, test = _load_fashion_mnist(args.path, flatten, comm)
            (X_train, y_train), (X_test, y_test) = train, test
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return _train_and_report(X_train, y_train, X_test, y_test,
                             hidden=args.hidden or (256, 128), epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr,
                             optimizer=args.optimizer, momentum=args.momentum,
                             weight_decay=args.weight_decay,
                             activation=args.activation or "relu", seed=args.seed,
                             threads=args.threads, out=args.out, verbose=args.verbose,
                             comm=comm, shards=args.shards, model=args.model,
                             checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                             resume=args.resume, precision=args.precision)


def _load_fashion_mnist(path, flatten, comm):
    """Fashion-MNIST; under mpiexec memory-mapped (a .npy cache of the
    gzip'ed IDX files that rank 0 builds first, if missing, and every rank
    maps): the ranks of a node share one copy and each reads only its rows."""
    import nncore as nn
    if comm is None:
        return nn.datasets.load_fashion_mnist(path, flatten=flatten)
    error = None
    if comm.Get_rank() == 0:
        try:
            nn.datasets.load_fashion_mnist(path, mmap=True)
        except (OSError, ValueError) as exc:
            error = exc
    error = comm.bcast(error, root=0)       # every rank fails alike, none waits
    if error is not None:
        raise error
    return nn.datasets.load_fashion_mnist(path, flatten=flatten, mmap=True)


def _add_demo_parser(sub):
    p = sub.add_parser("demo", help="train on the built-in digits, report accuracy and "
                                    "speed, save the model (a few seconds)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="nncore-demo.nnc", help="where to save the model "
                   "('' to skip)")


def _add_train_parser(sub):
    p = sub.add_parser("train", help="train a classifier (MLP, small CNN or ResNet-20) on "
                                     "Fashion-MNIST or digits")
    p.add_argument("--data", choices=["fashion-mnist", "digits"], default="fashion-mnist")
    p.add_argument("--path", default=None, help="folder with the Fashion-MNIST IDX files "
                   "(default: $NNCORE_DATA, then /usr/share/datasets/fashion-mnist)")
    p.add_argument("--model", choices=MODELS, default="mlp",
                   help="mlp (default; --hidden, --activation), cnn (nncore.models.small_cnn "
                        "sized for the images) or resnet20 (nncore.models.resnet(20))")
    p.add_argument("--hidden", type=_hidden_sizes, default=None,
                   help="hidden layer widths of the mlp, comma-separated (default 256,128)")
    p.add_argument("--activation", choices=["relu", "tanh", "sigmoid", "gelu"],
                   default=None, help="of the mlp's hidden layers (default relu)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "rmsprop"], default="sgd")
    p.add_argument("--momentum", type=float, default=0.9, help="for sgd and rmsprop")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=None,
                   help="OpenMP threads (default: all cores; under mpiexec, the cores of "
                        "the node divided among its ranks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["float32", "bf16"], default="float32",
                   help="bf16: Trainer(precision='bf16'), the GEMMs of the training steps in "
                        "bfloat16 with float32 master weights (default float32)")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1)
    p.add_argument("--out", default="nncore-model.nnc", help="where to save the model "
                   "('' to skip)")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="write a checkpoint that resumes the run bitwise (model, optimizer, "
                        "training position) at every epoch's end, or see --checkpoint-every")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="BATCHES",
                   help="write the --checkpoint every this many batches instead")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint when the file exists (the same data, "
                        "--batch-size, --shards and optimizer), bitwise as if never stopped")
    p.add_argument("--shards", type=int, default=None,
                   help="cut each batch into this many shards, summed in a fixed order: "
                        "bitwise the same weights on any number of MPI ranks (default 4 "
                        "under mpiexec, else no sharding)")


LANDSCAPE_DATA = ("digits", "fashion-mnist")


def _add_landscape_parser(sub):
    p = sub.add_parser(
        "landscape", help="plot the loss landscape around a saved model, or compare ResNets "
        "with and without skip connections (Li et al. 2018)",
        description="The loss landscape of MODEL in the plane of two random filter-normalised "
        "directions; or, with --compare-skip, ResNet-DEPTH with and without skip connections "
        "(trained with one recipe, or loaded with --models), their two surfaces and "
        "curvature maps side by side, saved to --result; or --replot a saved result.")
    p.add_argument("model", metavar="MODEL", nargs="?", help="a model file written by "
                   "nncore.save (not with --compare-skip or --replot)")
    p.add_argument("--data", choices=LANDSCAPE_DATA, default=None,
                   help="evaluate the loss on this data set's training samples (default "
                   "digits; fashion-mnist with --compare-skip)")
    p.add_argument("--out", default="landscape.png",
                   help="output image; .png, .svg or .pdf (default landscape.png)")
    p.add_argument("--dims", type=int, choices=(1, 2), default=2)
    p.add_argument("--steps", type=int, default=21, help="grid points per axis (default 21)")
    p.add_argument("--span", type=float, default=1.0,
                   help="the grid runs from -span to span on each axis (default 1)")
    p.add_argument("--normalization", choices=("filter", "layer", "none"), default="filter")
    p.add_argument("--ignore", choices=("biasbn", "none"), default="biasbn",
                   help="biasbn (default, as Li et al.): biases and BatchNorm parameters do "
                   "not move; none: they move along themselves")
    p.add_argument("--kind", choices=("contour", "surface", "line"), default=None,
                   help="plot kind (default: line for --dims 1, contour for 2)")
    p.add_argument("--samples", type=int, default=None,
                   help="use the first N training samples (default 10000; 2000 with "
                   "--compare-skip)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="rows per inference pass (default: all for vectors, 256 for images)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    p.add_argument("--dpi", type=int, default=100, help="resolution of a PNG (default 100)")
    g = p.add_argument_group("comparing ResNets with and without skip connections")
    g.add_argument("--compare-skip", action="store_true",
                   help="train ResNet-DEPTH with and without skips with one recipe (or load "
                   "them, --models), draw both surfaces and curvature maps side by side")
    g.add_argument("--models", nargs=2, metavar=("WITH_SKIPS", "WITHOUT_SKIPS"),
                   help="load the two nets from nncore model files instead of training")
    g.add_argument("--replot", metavar="RESULT", help="redraw a saved result file (.npz) "
                   "without computing anything")
    g.add_argument("--result", default="landscape.npz",
                   help="where --compare-skip saves its grids and metadata (default "
                   "landscape.npz); the trained models go next to it (-skip.nnc, -noskip.nnc)")
    g.add_argument("--depth", type=int, default=20, help="ResNet depth, 6n+2 (default 20)")
    g.add_argument("--width", type=int, default=16, help="channels of the first stage "
                   "(default 16, the paper's)")
    g.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    g.add_argument("--train-samples", type=int, default=None,
                   help="train on the first N training samples (default all)")
    g.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05, "
                   "momentum 0.9, cosine decay over the epochs)")
    g.add_argument("--weight-decay", type=float, default=5e-4)
    g.add_argument("--train-batch-size", type=int, default=128)
    g.add_argument("--curvature-steps", type=int, default=5,
                   help="curvature grid points per axis over the same span (default 5; "
                   "0: no curvature maps)")
    g.add_argument("--curvature-samples", type=int, default=256,
                   help="the first N of the surface's samples for the Hessian (default 256)")
    g.add_argument("--lanczos-iters", type=int, default=10,
                   help="Lanczos steps per curvature point (default 10)")
    g.add_argument("--threshold", type=float, default=0.1,
                   help="report the fraction of points with |lambda_min/lambda_max| above "
                   "this (default 0.1)")
    g.add_argument("--threads", type=int, default=None, help="OpenMP threads")


class _LandscapeProgress:
    """A progress line on stderr for the grids of ``landscape --compare-skip``:
    the phase's points done, points/s, the phase's time left and an estimate
    of the whole run's (phases not started yet are estimated from the rate of
    the same kind of phase done before, or from the surface rate and the
    relative cost of a curvature point). Redrawn in place on a terminal, a
    line every ~10 s otherwise."""

    def __init__(self, phases, stream=None):
        self.phases = phases      # [(label, kind, points, cost of one point in surface points)]
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.rates = {}           # kind -> seconds per point measured
        self.current = -1

    def start(self, index):
        import time
        self.current = index
        self.t0 = self.last = time.perf_counter()

    def _left_after(self, index):
        """Seconds estimated for the phases after ``index``."""
        surface = self.rates.get("surface")
        left = 0.0
        for label, kind, points, cost in self.phases[index + 1:]:
            if kind in self.rates:
                left += points * self.rates[kind]
            elif surface is not None:
                left += points * cost * surface
            else:
                return None
        return left

    def __call__(self, done, total):
        import time
        from nncore.progress import format_duration
        now = time.perf_counter()
        label, kind, _, _ = self.phases[self.current]
        elapsed = now - self.t0
        if done == total:
            self.rates[kind] = elapsed / total
        if done < total and now - self.last < (0.2 if self.live else 10.0):
            return
        self.last = now
        per_point = elapsed / done
        phase_left = (total - done) * per_point
        later = self._left_after(self.current)
        if later is None:     # no rate for the later phases yet: estimate them as this one
            later = sum(p * per_point for _, k, p, _ in self.phases[self.current + 1:])
        width = 20
        filled = int(width * done / total)
        bar = "=" * filled + (">" if filled < width else "") + "." * (width - filled - 1)
        line = (f"{label}: {kind} [{bar}] {done}/{total} points, {1 / per_point:.2f} points/s, "
                f"{format_duration(elapsed)} elapsed, ETA {format_duration(phase_left)} "
                f"(all: ~{format_duration(phase_left + later)} left)")
        if self.live:
            self.stream.write("\r" + line + "\x1b[K" + ("\n" if done == total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _landscape_data(name, path=None):
    """((X_train, y_train), (X_test, y_test)) as NCHW images."""
    from nncore import datasets
    if name == "digits":
        X, y = datasets.load_digits(flatten=False)
        X_train, X_test, y_train, y_test = datasets.train_test_split(
            X, y, test_size=0.25, seed=0, stratify=True)
        return (X_train, y_train), (X_test, y_test)
    return datasets.load_fashion_mnist(path, flatten=False)


def _accuracy(model, X, y, batch_size=256):
    import numpy as np
    return float(np.mean(model.predict(X, batch_size=batch_size).argmax(axis=1) == y))


def _train_resnet(skip, args, X, y, verbose):
    """ResNet-depth (with or without skips) trained with the command's recipe:
    SGD with momentum 0.9, weight decay, cosine decay over the epochs, the
    same seed for initialisation and data order."""
    import nncore as nn
    nn.manual_seed(args.seed)
    model = nn.models.resnet(args.depth, skip=skip, width=args.width, in_channels=X.shape[1],
                             num_classes=int(y.max()) + 1)
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(),
                         nn.SGD(lr=args.lr, momentum=0.9, weight_decay=args.weight_decay),
                         batch_size=args.train_batch_size, seed=args.seed)
    trainer.fit(X, y, args.epochs, callbacks=[nn.callbacks.CosineAnnealingLR(args.epochs)],
                verbose=verbose)
    model.eval()
    return model


def _landscape_replot(args):
    import os
    from nncore import landscape
    try:
        results, meta = landscape.load_landscapes(args.replot)
        for name, land in results.items():
            if land.dims != 2:
                raise ValueError(f"{name!r} is a {land.dims}-D landscape; --replot draws 2-D ones")
    except (OSError, ValueError) as exc:
        print(f"landscape: {exc}", file=sys.stderr)
        return 1
    landscape.plot_landscapes(results, args.out, dpi=args.dpi,
                              threshold=meta.get("threshold", args.threshold),
                              title=meta.get("title"))
    _landscape_report(results, meta.get("threshold", args.threshold))
    print(f"wrote {args.out} from {os.path.basename(args.replot)}")
    return 0


def _landscape_report(results, threshold):
    from nncore import landscape
    for name, land in results.items():
        m = landscape.convexity_measures(land, threshold)
        st = land.stats
        line = (f"{name}: loss {land.losses.min():.4f}..{land.losses.max():.4f}; "
                f"midpoint-convexity violations {100 * m['midpoint_violations']:.1f}% of points")
        if land.curvature is not None:
            line += (f"; |lambda_min/lambda_max| > {threshold:g} at "
                     f"{100 * m['nonconvex_fraction']:.1f}% of {land.curvature.ratio.size} "
                     f"curvature points")
        if st.get("accuracy") is not None:
            line += f"; test accuracy {st['accuracy']:.4f}"
        print(line)
        if "seconds" in st:
            print(f"  surface {land.losses.size} points x {st['samples']} samples in "
                  f"{st['seconds']:.1f} s ({st['points_per_second']:.2f} points/s)", end="")
            cs = land.curvature.stats if land.curvature is not None else {}
            if "seconds" in cs:
                print(f"; curvature {land.curvature.ratio.size} points x {cs['samples']} "
                      f"samples x {cs['iters']} Lanczos steps in {cs['seconds']:.1f} s", end="")
            print()


def _landscape_compare(args):
    import os
    import time

    import nncore
    from nncore import landscape

    samples = 2000 if args.samples is None else args.samples
    data = args.data or "fashion-mnist"
    problem = None
    if (args.depth - 2) % 6 or args.depth < 8:
        problem = f"--depth must be 6n + 2 (8, 14, 20, 32, 44, 56, 110), got {args.depth}"
    elif min(samples, args.width, args.epochs, args.train_batch_size,
             args.curvature_samples, args.lanczos_iters) < 1 or args.curvature_steps < 0 \
            or args.curvature_steps == 1:
        problem = ("--samples, --width, --epochs, --train-batch-size, --curvature-samples and "
                   "--lanczos-iters must be >= 1, --curvature-steps 0 or >= 2")
    elif os.path.splitext(args.result)[1].lower() != ".npz":
        problem = f"--result {args.result}: use a .npz file name"
    elif args.dims != 2:
        problem = "--compare-skip draws 2-D surfaces: --dims 2"
    elif args.models and any(not os.path.exists(m) for m in args.models):
        problem = f"--models: no such file {next(m for m in args.models if not os.path.exists(m))}"
    if problem:
        print(f"landscape: {problem}", file=sys.stderr)
        return 2
    if args.threads is not None:
        nncore.set_num_threads(args.threads)
    try:
        (X_train, y_train), (X_test, y_test) = _landscape_data(data)
    except (OSError, ValueError) as exc:
        print(f"landscape: {exc}", file=sys.stderr)
        return 1
    if args.train_samples is not None:
        X_train, y_train = X_train[:args.train_samples], y_train[:args.train_samples]
    X, y = X_train[:samples], y_train[:samples]
    Xc, yc = X[:args.curvature_samples], y[:args.curvature_samples]
    stem = os.path.splitext(args.result)[0]
    nets = [(True, f"ResNet-{args.depth}"), (False, f"ResNet-{args.depth} without skips")]
    recipe = {"depth": args.depth, "width": args.width, "epochs": args.epochs,
              "train_samples": int(len(X_train)), "optimizer": "SGD", "lr": args.lr,
              "momentum": 0.9, "weight_decay": args.weight_decay,
              "batch_size": args.train_batch_size, "schedule": "cosine over the epochs",
              "augmentation": None, "seed": args.seed}
    models = {}
    for k, (skip, name) in enumerate(nets):
        start = time.perf_counter()
        if args.models:
            try:
                model = nncore.load(args.models[k])
                model.predict(X[:2])
            except (OSError, ValueError, TypeError) as exc:
                print(f"landscape: {args.models[k]}: {exc}", file=sys.stderr)
                return 1
            name = f"{os.path.basename(args.models[k])} ({'with' if skip else 'without'} skips)"
            how = f"loaded from {args.models[k]}"
        else:
            print(f"training {name} on {len(X_train)} {data} images: SGD lr {args.lr} momentum "
                  f"0.9 weight decay {args.weight_decay}, cosine, batch {args.train_batch_size}, "
                  f"{args.epochs} epochs", flush=True)
            model = _train_resnet(skip, args, X_train, y_train,
                                  verbose=1 if sys.stdout.isatty() else 2)
            path = f"{stem}-{'skip' if skip else 'noskip'}.nnc"
            nncore.save(model, path)
            how = f"trained in {time.perf_counter() - start:.1f} s, saved to {path}"
        accuracy = _accuracy(model, X_test, y_test)
        print(f"{name}: test accuracy {accuracy:.4f} on {len(X_test)} images ({how})",
              flush=True)
        models[name] = (model, accuracy, how)

    loss = nncore.CrossEntropyLoss()
    # a curvature point costs 2 * iters gradient passes (~3 forward passes each)
    cost = 6.0 * args.lanczos_iters * len(Xc) / len(X)
    phases = []
    for name in models:
        phases.append((name, "surface", args.steps ** 2, 1.0))
        if args.curvature_steps:
            phases.append((name, "curvature", args.curvature_steps ** 2, cost))
    progress = _LandscapeProgress(phases)
    results, phase = {}, 0
    start = time.perf_counter()
    for name, (model, accuracy, how) in models.items():
        progress.start(phase)
        phase += 1
        land = landscape.loss_landscape(
            model, loss, X, y, steps=args.steps, span=args.span, seed=args.seed,
            normalization=None if args.normalization == "none" else args.normalization,
            ignore=None if args.ignore == "none" else args.ignore,
            batch_size=args.batch_size, progress=progress)
        land.stats.update(accuracy=accuracy, model=how)
        if args.curvature_steps:
            progress.start(phase)
            phase += 1
            land.curvature = landscape.curvature_map(
                model, loss, Xc, yc, land, steps=args.curvature_steps, span=args.span,
                iters=args.lanczos_iters, seed=args.seed, batch_size=args.batch_size,
                progress=progress)
        results[name] = land
    seconds = time.perf_counter() - start
    title = (f"{data}, {len(X)} training samples, {args.steps}x{args.steps} grid, span "
             f"{args.span}, {args.normalization}-normalised directions (ignore={args.ignore})")
    meta = {"command": "python -m nncore landscape " + " ".join(args.argv), "data": data,
            "samples": int(len(X)), "steps": args.steps, "span": args.span,
            "normalization": args.normalization, "ignore": args.ignore, "seed": args.seed,
            "curvature_steps": args.curvature_steps, "curvature_samples": int(len(Xc)),
            "lanczos_iters": args.lanczos_iters, "threshold": args.threshold,
            "recipe": None if args.models else recipe, "grid_seconds": seconds,
            "threads": nncore.get_num_threads(), "title": title,
            "measures": {name: landscape.convexity_measures(land, args.threshold)
                         for name, land in results.items()}}
    landscape.save_landscapes(args.result, results, meta)
    landscape.plot_landscapes(results, args.out, dpi=args.dpi, threshold=args.threshold,
                              title=title)
    _landscape_report(results, args.threshold)
    print(f"grids in {seconds:.1f} s; wrote {args.result} and {args.out}")
    return 0


def cmd_landscape(args):
    import os
    import time

    import numpy as np

    import nncore
    from nncore import datasets

    from nncore import landscape

    # Check everything cheap before the grid is computed.
    problem = None
    modes = sum(bool(v) for v in (args.model, args.compare_skip, args.replot))
    if modes != 1:
        problem = "give a MODEL file, --compare-skip or --replot RESULT (one of them)"
    elif args.models and not args.compare_skip:
        problem = "--models goes with --compare-skip"
    elif (args.samples is not None and args.samples < 1) or args.steps < 2 or args.dpi < 1:
        problem = "--samples and --dpi must be >= 1, --steps >= 2"
    elif os.path.splitext(args.out)[1].lower() not in landscape.PLOT_FORMATS:
        problem = f"--out {args.out}: use a {', '.join(landscape.PLOT_FORMATS)} file name"
    elif args.kind is not None and (args.kind == "line") != (args.dims == 1):
        problem = f"--kind {args.kind} does not fit --dims {args.dims}"
    else:
        try:
            landscape._matplotlib()
        except ImportError as exc:
            problem = str(exc)
    if problem:
        print(f"landscape: {problem}", file=sys.stderr)
        return 2
    if args.replot:
        return _landscape_replot(args)
    if args.compare_skip:
        return _landscape_compare(args)
    args.data = args.data or "digits"
    args.samples = 10000 if args.samples is None else args.samples
    try:
        model = nncore.load(args.model)
        if args.data == "digits":
            X, y = datasets.load_digits(flatten=False)
        else:
            (X, y), _ = datasets.load_fashion_mnist(flatten=False)
    except (OSError, ValueError) as exc:
        print(f"landscape: {exc}", file=sys.stderr)
        return 1
    X, y = _shaped_for(model, X[:args.samples]), y[:args.samples]
    loss = nncore.CrossEntropyLoss()
    start = time.perf_counter()
    try:
        result = nncore.loss_landscape(
            model, loss, X, y, dims=args.dims, steps=args.steps, span=args.span,
            normalization=None if args.normalization == "none" else args.normalization,
            ignore=None if args.ignore == "none" else args.ignore,
            seed=args.seed, batch_size=args.batch_size)
    except ValueError as exc:   # e.g. the model does not take this data's features
        print(f"landscape: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    result.plot(args.out, kind=args.kind, dpi=args.dpi,
                title=f"{os.path.basename(args.model)} on {args.data} "
                      f"({len(X)} samples, {args.normalization}-normalised directions)")
    print(f"{result.losses.size} points x {len(X)} samples in {seconds:.2f} s; loss "
          f"{np.nanmin(result.losses):.4f}..{np.nanmax(result.losses):.4f}", end="")
    if args.steps % 2:
        centre = result.losses[tuple(len(c) // 2 for c in result.coords)]
        print(f", at the model {centre:.4f}", end="")
    print()
    print(f"wrote {args.out}")
    return 0


def _shaped_for(model, images):
    """NCHW `images` as `model` takes them: one row of pixels per sample for a
    model whose first layer takes vectors (an MLP), unchanged otherwise (a
    conv net); a size mismatch is then reported by the model itself."""
    shape = getattr(model, "input_shape", None)
    if shape is not None and len(shape) == 1:
        return images.reshape(len(images), -1)
    return images


def _load_any(path, allow_external_data=False):
    """A model from an ONNX file (by its .onnx extension) or an nncore file."""
    import nncore
    if str(path).lower().endswith(".onnx"):
        from nncore import onnx as nnonnx
        return nnonnx.load(path, allow_external_data=allow_external_data)
    return nncore.load(path)


def _shape(text):
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}")
    if not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"dimensions must be >= 1, got {text!r}")
    return shape


def _add_export_parser(sub):
    p = sub.add_parser("export", help="write an nncore model file as ONNX (for onnxruntime "
                                      "and other runtimes)")
    p.add_argument("model", metavar="MODEL", help="a model file written by nncore.save")
    p.add_argument("out", metavar="OUT", help="the ONNX file to write")
    p.add_argument("--input-shape", type=_shape, default=None, metavar="DIMS",
                   help="one sample's shape, comma-separated, e.g. 1,28,28 (needed for conv "
                        "nets; an MLP's is its first layer's width)")
    p.add_argument("--opset", type=int, default=17, help="ONNX operator set (default 17)")


def cmd_export(args):
    import nncore
    try:
        from nncore import onnx as nnonnx
        model = nncore.load(args.model)
        if not isinstance(model, nncore.Sequential):
            model = model.model_            # a fitted estimator: its network
        nnonnx.export(model, args.out, input_shape=args.input_shape, opset=args.opset)
    except ImportError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


def _add_predict_parser(sub):
    p = sub.add_parser("predict", help="run a model (.onnx or nncore file) on a .npy array")
    p.add_argument("model", metavar="MODEL", help="an ONNX file (.onnx) or an nncore model file")
    p.add_argument("--input", required=True, metavar="X.npy",
                   help="the samples, batch first (a NumPy .npy file; never unpickled)")
    p.add_argument("--output", default=None, metavar="Y.npy",
                   help="write the predictions here (default: print them, one row per sample)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--allow-external-data", action="store_true",
                   help="read an ONNX model's weights kept in files next to it")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads")


def cmd_predict(args):
    import numpy as np
    import nncore
    if args.threads is not None:
        nncore.set_num_threads(args.threads)
    try:
        model = _load_any(args.model, args.allow_external_data)
        X = np.load(args.input, allow_pickle=False)
        if not isinstance(X, np.ndarray):
            raise ValueError(f"{args.input}: expected one .npy array, not an .npz archive")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if isinstance(model, nncore.Sequential):
            out = model.predict(X, batch_size=args.batch_size)
        else:
            out = model.predict(X)          # a fitted estimator: its labels or values
    except ImportError as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError) as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 1
    if args.output:
        np.save(args.output, out)
        print(f"wrote {args.output}: predictions of shape {out.shape}")
    else:
        np.savetxt(sys.stdout, out.reshape(len(out), -1), fmt="%.7g")
    return 0


def build_parser():
    from .bench import FAMILIES

    parser = argparse.ArgumentParser(prog="python -m nncore",
                                     description="nncore: neural networks on the CPU")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the version, ISA, threads and build details")
    bench = sub.add_parser("bench", help="benchmark nncore against NumPy, PyTorch and "
                                         "scikit-learn, side by side")
    bench.add_argument("family", nargs="?", default="all", choices=sorted(FAMILIES) + ["all"],
                       help="; ".join(f"{k}: {v[1]}" for k, v in sorted(FAMILIES.items()))
                       + "; all (default): every family")
    bench.add_argument("--quick", action="store_true",
                       help="fewer cases, smaller sizes and repeats (seconds per family)")
    bench.add_argument("--threads", type=int, default=2, help="threads for every side (default 2)")
    bench.add_argument("--isa", help="force an nncore kernel path (generic, avx2, avx512)")
    bench.add_argument("--peers", default=None, metavar="LIST",
                       help="comma-separated peers among numpy,torch,sklearn,onnxruntime "
                            "(default: all that import)")
    bench.add_argument("--json", metavar="FILE",
                       help="also write the environment and rows as JSON")
    bench.add_argument("--markdown", metavar="FILE",
                       help="also write the tables in Markdown (as in the README)")
    bench.add_argument("--plot", metavar="FILE",
                       help="draw the speed-ups as bar charts (PNG/SVG/PDF; needs matplotlib)")
    bench.add_argument("--precision", choices=["float32", "bf16"], default="float32",
                       help=f"bf16 ({' and '.join(BF16_FAMILIES)} only): nncore in bfloat16 "
                            "beside nncore float32, the peers and (train) PyTorch's bf16 "
                            "autocast; %% of the bf16 peak")
    bench.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests only
    _add_demo_parser(sub)
    _add_train_parser(sub)
    _add_landscape_parser(sub)
    _add_export_parser(sub)
    _add_predict_parser(sub)
    return parser


COMMANDS = {"info": cmd_info, "bench": cmd_bench, "demo": cmd_demo, "train": cmd_train,
            "landscape": cmd_landscape, "export": cmd_export, "predict": cmd_predict}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
