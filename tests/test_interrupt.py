"""Ctrl-C (SIGINT) during Trainer.fit: training stops after the current
batch, the model holds exactly the weights of that step, the last checkpoint
is intact, and KeyboardInterrupt still reaches the caller."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import nncore as nn
from nncore.callbacks import LambdaCallback

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix",
                                reason="POSIX signals")


def data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 8)).astype(np.float32), rng.integers(0, 3, n)


def setup(seed=0):
    nn.manual_seed(seed)
    model = nn.Sequential(nn.Dense(8, 16), nn.ReLU(), nn.Dense(16, 3))
    return nn.Trainer(model, nn.CrossEntropyLoss(), nn.Adam(0.01), batch_size=16, seed=seed)


def run_batches(count):
    """Weights after exactly `count` batches of the same run."""
    X, y = data()
    trainer = setup()
    seen = []

    def stop(batch, logs):
        seen.append(batch)
        if len(seen) == count:
            trainer.stop_training = True
    trainer.fit(X, y, 10, verbose=0, callbacks=[LambdaCallback(on_batch_end=stop)])
    return trainer.model.state_dict()


@pytest.mark.parametrize("at_batch", [5, 25, 31])      # 25 batches per epoch
def test_sigint_stops_after_the_current_batch(at_batch):
    X, y = data()
    trainer = setup()
    seen = []

    def interrupt(batch, logs):
        seen.append(batch)
        if len(seen) == at_batch:
            os.kill(os.getpid(), signal.SIGINT)   # as Ctrl-C would, mid-epoch
    epochs_ended = []
    callbacks = [LambdaCallback(on_batch_end=interrupt,
                                on_epoch_end=lambda e, logs: epochs_ended.append(e))]
    with pytest.raises(KeyboardInterrupt, match=r"interrupted \(SIGINT\) after (batch|epoch)"):
        trainer.fit(X, y, 10, verbose=0, callbacks=callbacks)
    assert len(seen) == at_batch                          # not one batch more
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not trainer.model.training
    completed = at_batch // 25
    assert len(trainer.history) == completed == len(epochs_ended)   # no partial epoch logged
    want = run_batches(at_batch)
    for key, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(value, want[key], err_msg=key)   # exactly that step


def test_handler_restored_after_errors_and_untouched_in_threads():
    X, y = data()
    with pytest.raises(ValueError):
        setup().fit(X, y + 7, 1, verbose=0)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    boom = LambdaCallback(on_epoch_end=lambda e, logs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        setup().fit(X, y, 1, verbose=0, callbacks=[boom])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    seen = []
    trainer = setup()
    t = threading.Thread(target=lambda: seen.append(trainer.fit(X, y, 1, verbose=0)))
    t.start()
    t.join()
    assert len(seen[0]) == 1


def test_a_custom_sigint_handler_is_left_alone():
    calls = []

    def mine(signum, frame):
        calls.append(signum)
    previous = signal.signal(signal.SIGINT, mine)
    try:
        X, y = data()
        hook = LambdaCallback(on_batch_end=lambda b, logs: b == 3 and os.kill(os.getpid(),
                                                                              signal.SIGINT))
        history = setup().fit(X, y, 1, verbose=0, callbacks=[hook])
        assert len(history) == 1 and calls == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import nncore as nn
    from nncore.callbacks import LambdaCallback, ModelCheckpoint
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20000, 64)).astype(np.float32)
    y = rng.integers(0, 10, 20000)
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(64, 256), nn.ReLU(), nn.Dense(256, 10))
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(0.01, momentum=0.9),
                         batch_size=32, seed=0)
    say = LambdaCallback(on_epoch_end=lambda e, logs: print("saved", e, flush=True))
    trainer.fit(X, y, 1000, verbose=0, callbacks=[ModelCheckpoint(sys.argv[1]), say])
""")


def test_ctrl_c_in_a_training_process(tmp_path):
    """A real run: SIGINT after the first checkpoint. The process ends with
    KeyboardInterrupt (status -SIGINT, as for any Python program stopped by
    Ctrl-C) and our message; the checkpoint file loads and is finite."""
    ckpt = tmp_path / "ckpt.nnc"
    proc = subprocess.Popen([sys.executable, "-P", "-c", SCRIPT, str(ckpt)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("saved 0"):
            proc.kill()
            raise AssertionError(f"no checkpoint: {line!r} {proc.communicate()[1]}")
        time.sleep(0.05)                   # somewhere in the middle of epoch 2
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGINT, (proc.returncode, err)
    assert "KeyboardInterrupt: Trainer.fit: interrupted (SIGINT) after" in err, err
    model = nn.load(ckpt)
    assert all(np.isfinite(p).all() for p, _ in model.parameters())
    assert model.predict(np.ones((2, 64), np.float32)).shape == (2, 10)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.nnc"]    # no temporary left


def test_second_ctrl_c_interrupts_at_once():
    """The first SIGINT puts the default handler back: a second one raises
    KeyboardInterrupt right where it lands (here: inside a callback)."""
    X, y = data()
    seen = []

    def twice(batch, logs):
        seen.append(batch)
        if batch == 3:
            os.kill(os.getpid(), signal.SIGINT)      # flag: stop after this batch
            os.kill(os.getpid(), signal.SIGINT)      # at once
    with pytest.raises(KeyboardInterrupt) as info:
        setup().fit(X, y, 1, verbose=0, callbacks=[LambdaCallback(on_batch_end=twice)])
    assert "Trainer.fit" not in str(info.value) and seen == [0, 1, 2, 3]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
