"""The training progress display used by ``Trainer.fit(verbose=...)``.

A small built-in bar rather than tqdm: nncore's only run-time dependency is
NumPy and a progress line is ~100 lines of code; tqdm would add a dependency
(or two code paths when it is optional) for a single line of output, and its
per-iteration bookkeeping costs more than a whole batch-1 training step here.
This bar costs one ``time.perf_counter()`` call per batch and redraws at most
ten times a second.

- ``verbose=1`` on a terminal: one line per epoch, redrawn in place with a
  bar, ETA, running loss (and accuracy) and samples/s;
- ``verbose=1`` when the output is not a terminal (logs, CI), or ``verbose=2``:
  one compact line per epoch;
- ``verbose=0``: nothing.
"""
import sys
import time

from .callbacks import Callback

_REDRAW_SECONDS = 0.1
_BAR_WIDTH = 24


def format_duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def format_rate(per_second):
    """A throughput such as '48.7k'."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_second >= limit:
            return f"{per_second / limit:.1f}{suffix}"
    return f"{per_second:.0f}"


def format_logs(logs, skip=("seconds", "samples_per_sec", "lr")):
    return " - ".join(f"{key} {value:.4f}" for key, value in logs.items()
                      if key not in skip and isinstance(value, float))


class ProgressBar(Callback):
    """Print training progress to ``stream`` (default ``sys.stdout``).

    ``live`` chooses the redrawn bar (True) or one line per epoch (False);
    None picks the bar when ``stream`` is a terminal.
    """

    # in data-parallel training (Trainer(comm=...)) only rank 0 prints
    rank_zero_only = True

    def __init__(self, stream=None, live=None):
        self.stream = stream if stream is not None else sys.stdout
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live
        if live:
            # only a live bar needs to hear about every batch
            self.on_batch_end = self._on_batch_end

    def on_train_begin(self, logs=None):
        self._epochs = self.trainer.epochs
        self._n_samples = self.trainer.n_samples
        self._width = len(str(self._epochs))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._seen = 0
        self._loss_sum = 0.0
        self._start = self._last_draw = time.perf_counter()

    def _on_batch_end(self, batch, logs):
        size = logs["size"]
        self._seen += size
        self._loss_sum += logs["loss"] * size
        now = time.perf_counter()
        if now - self._last_draw >= _REDRAW_SECONDS:
            self._last_draw = now
            self._draw(now)

    def _prefix(self):
        return f"epoch {self._epoch + 1:>{self._width}}/{self._epochs}"

    def _draw(self, now):
        elapsed = now - self._start
        done = self._seen / self._n_samples if self._n_samples else 1.0
        filled = int(_BAR_WIDTH * done)
        bar = "=" * filled + (">" if filled < _BAR_WIDTH else "") + "." * (_BAR_WIDTH - filled - 1)
        rate = self._seen / elapsed if elapsed > 0 else 0.0
        eta = (self._n_samples - self._seen) / rate if rate > 0 else 0.0
        loss = self._loss_sum / self._seen if self._seen else float("nan")
        self.stream.write(f"\r{self._prefix()} [{bar}] {self._seen}/{self._n_samples} "
                          f"ETA {format_duration(eta)} - loss {loss:.4f} - "
                          f"{format_rate(rate)} samples/s\x1b[K")
        self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        line = (f"{self._prefix()} - {logs.get('seconds', 0.0):.2f}s - "
                f"{format_rate(logs.get('samples_per_sec', 0.0))} samples/s - {format_logs(logs)}")
        self.stream.write(("\r" + line + "\x1b[K\n") if self.live else line + "\n")
        self.stream.flush()
