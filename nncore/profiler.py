"""The profiler: where the time of a run goes, per layer and per kernel.

    with nncore.profile() as prof:
        trainer.fit(X, y, epochs=1)
    print(prof.table())
    prof.export_chrome_trace("trace.json")   # open in Perfetto or chrome://tracing

Two sources, on one clock (CLOCK_MONOTONIC):

- C events: while a profile is active, every kernel entry point (the dispatch
  trampolines, nn_sgemm split by transpose case, the losses) records its start,
  duration, sizes and, for SGEMM, its FLOP count (2 m n k) into a preallocated
  buffer (csrc/profile.c). Off, each entry point pays one load and a
  predictable branch.
- Python spans: each layer's forward and backward inside Sequential, each
  loss forward and each optimizer step. Off, Sequential.forward/backward,
  Loss.forward and Optimizer.step pay one global lookup.

A kernel event belongs to the innermost span around it on the same thread.
A span's time minus its kernels' time is Python (and NumPy) overhead; the
profile's wall time minus every top-level span is time outside the model,
loss and optimizer (the training loop itself: batching, metrics, callbacks).
"""
import json
import os
import threading

import numpy as np

from . import _core
from . import _guard
from . import losses, optim
from .bench.machine import peak_gflops
from .layers import Sequential, sequential
from .layers.base import as_input

__all__ = ["profile"]

_EVENT_BYTES = 56       # sizeof(nn_profile_event), csrc/nncore.h

_now = _core.profile_now_ns
_native_id = threading.get_native_id
_ident = threading.get_ident

# Kernels whose events carry GEMM FLOPs (GFLOP/s columns): nn_sgemm's, and
# conv2d's (its GEMMs run unprofiled inside it, so time is counted once).
_GEMM_PREFIX = ("sgemm_", "conv2d_")


class _Recorder:
    """Installed as ``_PROFILE`` in layers, losses and optim while a profile
    is active; appends one tuple per span:
    (kind, owner, index, phase, start_ns, end_ns, thread)."""

    def __init__(self):
        self.spans = []
        self._inside = set()    # (thread, id(owner)) of the spans open now

    def outer(self, owner):
        """False when `owner` (a loss or optimizer) is already inside its span
        on this thread: span() calls the method again, which then runs its body."""
        return (_ident(), id(owner)) not in self._inside

    def span(self, kind, owner, phase, method, *args):
        key = (_ident(), id(owner))
        self._inside.add(key)
        t0 = _now()
        try:
            return method(*args)
        finally:
            t1 = _now()
            self._inside.discard(key)
            self.spans.append((kind, owner, -1, phase, t0, t1, _native_id()))

    def sequential_forward(self, model, x):
        if not model.layers:
            return as_input(model, x)
        spans, tid = self.spans, _native_id()
        for i, step in enumerate(model._plan):
            t0 = _now()
            x = step(x)
            spans.append(("layer", model, i, "forward", t0, _now(), tid))
        return x

    def sequential_backward(self, model, grad, input_grad, sgd_lr):
        spans, tid = self.spans, _native_id()
        for index, step in model._backward_calls(input_grad, sgd_lr):
            t0 = _now()
            grad = step(grad)
            spans.append(("layer", model, index, "backward", t0, _now(), tid))
        return grad if input_grad or model._first_param is None else None


def _install(recorder):
    sequential._PROFILE = losses._PROFILE = optim._PROFILE = recorder


class profile:
    """Context manager recording C kernel events and per-layer spans.

    ``max_events``: room for C events (56 bytes each, touched only as used;
    more than the memory available raises MemoryError);
    calls past it are counted in ``dropped``. ``peak_gflops``: the FMA peak
    to report GEMM efficiency against (default: measured once per ISA and
    thread count with nncore.bench.peak_gflops when first needed).

    After the block: ``table()`` (text), ``summary()`` (a dict), ``to_json()``
    and ``export_chrome_trace(path)``; ``events`` (the C events, a NumPy
    structured array) and ``spans`` (the Python spans) hold the raw data.
    Profiles do not nest, and profile the whole process: kernels called from
    other threads are recorded too (on their own thread ids).
    """

    def __init__(self, max_events=1 << 20, peak_gflops=None):
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
            raise ValueError(f"profile: max_events must be an int >= 1, got {max_events!r}")
        # The buffer fills as a long run goes on: refuse what could never fit.
        _guard.check_memory(_EVENT_BYTES * max_events,
                            lambda: f"profile: room for max_events={max_events} events")
        self.max_events = max_events
        self._peak = peak_gflops
        self.events = None
        self.spans = None
        self.dropped = 0
        self.start_ns = self.end_ns = None
        self._summary = None

    def __enter__(self):
        self.threads = _core.get_num_threads()
        self.isa = _core.get_isa()
        self._recorder = _Recorder()
        _core.profile_start(self.max_events)
        _install(self._recorder)
        self.start_ns = _now()
        return self

    def __exit__(self, *exc):
        self.end_ns = _now()
        _core.profile_stop()
        _install(None)
        self.events = _core.profile_events()
        self.dropped = _core.profile_dropped()
        self.spans = self._recorder.spans
        self._recorder = None
        self._summary = None
        return False

    # ---- analysis ----

    @property
    def wall_s(self):
        """Seconds between entering and leaving the block."""
        self._check_done()
        return (self.end_ns - self.start_ns) * 1e-9

    def _check_done(self):
        if self.end_ns is None:
            raise RuntimeError("profile: results are available after the with block ends")

    def peak_gflops(self):
        """The FMA peak (GFLOP/s) for the ISA and thread count profiled."""
        if self._peak is None:
            self._peak = peak_gflops(self.threads)
        return self._peak

    def _names(self):
        """Span owner -> display name; layers named by their index path."""
        paths = {}

        def walk(model, prefix):
            for i, layer in enumerate(model.layers):
                paths[(id(model), i)] = f"{prefix}{i} {_layer_name(layer)}"
                if isinstance(layer, Sequential):
                    walk(layer, f"{prefix}{i}.")
        seen = set()
        for kind, owner, index, *_ in self.spans:
            if kind == "layer" and id(owner) not in seen:
                seen.add(id(owner))
                if not any(key[0] == id(owner) for key in paths):
                    walk(owner, "")
        return paths

    def _attribute(self):
        """For each span: its depth; for each C event: the span (index into
        self.spans) that contains it, innermost, or -1."""
        spans, ev = self.spans, self.events
        depth = [0] * len(spans)
        owner = np.full(len(ev), -1, np.int64)
        by_thread = {}
        for i, s in enumerate(spans):
            by_thread.setdefault(s[6], []).append(i)
        levels = {}
        for tid, idx in by_thread.items():
            idx.sort(key=lambda i: (spans[i][4], -spans[i][5]))
            stack = []
            for i in idx:
                start = spans[i][4]
                while stack and spans[stack[-1]][5] <= start:
                    stack.pop()
                depth[i] = len(stack)
                stack.append(i)
                levels.setdefault((tid, depth[i]), []).append(i)
        # Outer levels first: deeper spans then overwrite what they contain.
        for (tid, _), idx in sorted(levels.items(), key=lambda kv: kv[0][1]):
            on_thread = np.flatnonzero(ev["thread"] == tid)
            if not len(on_thread):
                continue
            starts = np.array([spans[i][4] for i in idx], np.int64)
            ends = np.array([spans[i][5] for i in idx], np.int64)
            order = np.argsort(starts, kind="stable")
            starts, ends, ids = starts[order], ends[order], np.array(idx, np.int64)[order]
            t = ev["start_ns"][on_thread]
            pos = np.searchsorted(starts, t, side="right") - 1
            ok = pos >= 0
            ok[ok] = t[ok] < ends[pos[ok]]
            owner[on_thread[ok]] = ids[pos[ok]]
        return depth, owner

    def summary(self):
        """The profile as a dict: totals, per-layer (span) and per-kernel rows.

        Times in seconds; ``share`` is the fraction of the profile's wall
        time; ``gflops`` and ``pct_peak`` are given for rows that ran GEMMs
        (their FLOPs over their time, against the FMA peak)."""
        self._check_done()
        if self._summary is not None:
            return self._summary
        ev, spans = self.events, self.spans
        wall = self.wall_s
        peak = self.peak_gflops()
        names = _core.profile_kernel_names()
        depth, owner = self._attribute()
        dur = ev["dur_ns"].astype(np.float64) * 1e-9
        flops = ev["flops"]
        layer_names = self._names()

        # Per span key: calls, total, kernel time inside, GEMM flops inside.
        rows = {}
        span_key = np.empty(len(spans), np.int64)   # span -> index of its row
        top_total = 0.0
        for i, (kind, obj, index, phase, t0, t1, tid) in enumerate(spans):
            if kind == "layer":
                name = layer_names.get((id(obj), index), f"{index} ?")
            else:
                name = f"{kind}: {type(obj).__name__}"
            r = rows.get((name, phase))
            if r is None:
                r = rows[(name, phase)] = {"name": name, "phase": phase, "kind": kind,
                                           "depth": depth[i], "calls": 0, "total_s": 0.0,
                                           "kernel_s": 0.0, "flops": 0.0, "gemm_s": 0.0,
                                           "_index": len(rows)}
            span_key[i] = r["_index"]
            r["calls"] += 1
            r["total_s"] += (t1 - t0) * 1e-9
            r["depth"] = min(r["depth"], depth[i])
            if depth[i] == 0:
                top_total += (t1 - t0) * 1e-9
        # Kernel time and GEMM FLOPs inside each span (the innermost), per row.
        if len(ev) and len(spans):
            is_gemm = np.array([n.startswith(_GEMM_PREFIX) for n in names])[ev["kernel"]]
            inside = owner >= 0
            key = span_key[owner[inside]]
            gemm = is_gemm[inside]
            sums = {"kernel_s": dur[inside], "flops": np.where(gemm, flops[inside], 0.0),
                    "gemm_s": np.where(gemm, dur[inside], 0.0)}
            totals = {field: np.bincount(key, weights=w, minlength=len(rows))
                      for field, w in sums.items()}
            for r in rows.values():
                for field, t in totals.items():
                    r[field] = float(t[r["_index"]])
        for r in rows.values():
            del r["_index"]
        span_rows = sorted(rows.values(), key=lambda r: -r["total_s"])
        for r in span_rows:
            r["mean_s"] = r["total_s"] / r["calls"]
            r["share"] = r["total_s"] / wall if wall > 0 else 0.0
            r["python_s"] = max(r["total_s"] - r["kernel_s"], 0.0)
            _rates(r, r["flops"], r["total_s"], peak)

        kernel_rows = []
        for kid in np.unique(ev["kernel"]) if len(ev) else []:
            sel = ev["kernel"] == kid
            total = float(dur[sel].sum())
            r = {"kernel": names[kid], "calls": int(sel.sum()), "total_s": total,
                 "mean_s": total / int(sel.sum()), "share": total / wall if wall > 0 else 0.0,
                 "flops": float(flops[sel].sum())}
            _rates(r, r["flops"], total, peak)
            kernel_rows.append(r)
        kernel_rows.sort(key=lambda r: -r["total_s"])
        kernel_total = float(dur.sum())
        steps = sum(1 for s in spans if s[0] == "optimizer")
        self._summary = {
            "wall_s": wall,
            "threads": self.threads,
            "isa": self.isa,
            "peak_gflops": peak,
            "events": int(len(ev)),
            "dropped": int(self.dropped),
            "steps": steps,
            "kernel_s": kernel_total,
            "outside_kernels_s": max(wall - kernel_total, 0.0),
            "spans_s": top_total,
            "outside_spans_s": max(wall - top_total, 0.0),
            "gemm_flops": float(flops.sum()) if len(ev) else 0.0,
            "layers": span_rows,
            "kernels": kernel_rows,
        }
        return self._summary

    def table(self, top=None):
        """A text report: per layer (and loss, optimizer) spans, then per
        kernel, then the totals. ``top``: keep only the first rows of each."""
        s = self.summary()
        wall = s["wall_s"]
        lines = [f"nncore profile: {wall * 1e3:.1f} ms wall, {s['threads']} thread(s), "
                 f"isa {s['isa']}, FMA peak {s['peak_gflops']:.0f} GFLOP/s, "
                 f"{s['events']} kernel calls"
                 + (f", {s['steps']} optimizer steps ({wall / s['steps'] * 1e6:.1f} us/step)"
                    if s["steps"] else "")]
        if s["dropped"]:
            lines.append(f"WARNING: {s['dropped']} kernel calls not recorded (buffer full; "
                         f"raise profile(max_events=...))")
        hdr = (f"{'layer / span':<34} {'phase':<8} {'calls':>7} {'total ms':>9} "
               f"{'mean us':>9} {'share':>6} {'kernel ms':>9} {'python ms':>9} "
               f"{'GFLOP/s':>8} {'%peak':>6}")
        lines += ["", hdr, "-" * len(hdr)]
        for r in s["layers"][:top]:
            name = "  " * r["depth"] + r["name"]
            lines.append(f"{name[:34]:<34} {r['phase']:<8} {r['calls']:>7} "
                         f"{r['total_s'] * 1e3:>9.2f} {r['mean_s'] * 1e6:>9.1f} "
                         f"{r['share'] * 100:>5.1f}% {r['kernel_s'] * 1e3:>9.2f} "
                         f"{r['python_s'] * 1e3:>9.2f} {_fmt_rate(r)}")
        lines.append(f"{'(outside model, loss, optimizer)':<34} {'':<8} {'':>7} "
                     f"{s['outside_spans_s'] * 1e3:>9.2f} {'':>9} "
                     f"{s['outside_spans_s'] / wall * 100 if wall else 0:>5.1f}%")
        hdr = (f"{'kernel':<24} {'calls':>7} {'total ms':>9} {'mean us':>9} {'share':>6} "
               f"{'GFLOP/s':>8} {'%peak':>6}")
        lines += ["", hdr, "-" * len(hdr)]
        for r in s["kernels"][:top]:
            lines.append(f"{r['kernel']:<24} {r['calls']:>7} {r['total_s'] * 1e3:>9.2f} "
                         f"{r['mean_s'] * 1e6:>9.1f} {r['share'] * 100:>5.1f}% {_fmt_rate(r)}")
        lines += ["", f"in kernels {s['kernel_s'] * 1e3:.2f} ms "
                  f"({s['kernel_s'] / wall * 100 if wall else 0:.1f}%), outside kernels "
                  f"(Python, NumPy, the training loop) {s['outside_kernels_s'] * 1e3:.2f} ms "
                  f"({s['outside_kernels_s'] / wall * 100 if wall else 0:.1f}%)"]
        return "\n".join(lines)

    def to_json(self, path=None):
        """The summary as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.summary(), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def export_chrome_trace(self, path):
        """Write the spans and kernel calls in the Chrome trace-event format
        (JSON with a ``traceEvents`` list of complete "X" events, times in
        microseconds from the start of the profile): open the file in
        https://ui.perfetto.dev or chrome://tracing."""
        self._check_done()
        pid = os.getpid()
        t0 = self.start_ns
        names = _core.profile_kernel_names()
        layer_names = self._names()
        events = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                   "args": {"name": "nncore"}}]
        threads = set()
        for kind, obj, index, phase, start, end, tid in self.spans:
            name = (layer_names.get((id(obj), index), f"{index} ?") if kind == "layer"
                    else f"{kind}: {type(obj).__name__}")
            events.append({"name": f"{name} {phase}", "cat": kind, "ph": "X", "pid": pid,
                           "tid": int(tid), "ts": (start - t0) / 1e3,
                           "dur": (end - start) / 1e3})
            threads.add(int(tid))
        for e in self.events:
            args = {"m": int(e["m"]), "n": int(e["n"]), "k": int(e["k"])}
            if e["flops"]:
                args["flops"] = float(e["flops"])
                if e["dur_ns"] > 0:
                    args["GFLOP/s"] = round(float(e["flops"]) / float(e["dur_ns"]), 2)
            events.append({"name": names[e["kernel"]], "cat": "kernel", "ph": "X", "pid": pid,
                           "tid": int(e["thread"]), "ts": (int(e["start_ns"]) - t0) / 1e3,
                           "dur": int(e["dur_ns"]) / 1e3, "args": args})
            threads.add(int(e["thread"]))
        for tid in sorted(threads):
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                           "args": {"name": f"thread {tid}"}})
        with open(path, "w") as f:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms",
                       "otherData": {"nncore_isa": self.isa, "threads": self.threads,
                                     "dropped_events": int(self.dropped)}}, f)
        return path


def _layer_name(layer):
    text = repr(layer)
    return text if len(text) <= 28 and "\n" not in text else type(layer).__name__


def _rates(row, flops, seconds, peak):
    if flops > 0 and seconds > 0:
        row["gflops"] = flops / seconds / 1e9
        row["pct_peak"] = 100.0 * row["gflops"] / peak if peak else None
    else:
        row["gflops"] = row["pct_peak"] = None


def _fmt_rate(r):
    if r.get("gflops") is None:
        return f"{'':>8} {'':>6}"
    pct = f"{r['pct_peak']:>5.1f}%" if r.get("pct_peak") is not None else f"{'':>6}"
    return f"{r['gflops']:>8.1f} {pct}"
