"""Weight initialisers and the one seeded generator behind them and Dropout.

``manual_seed(seed)`` replaces the generator, so a seed set before a model is
built fixes its initial weights and every dropout mask of its training run.
Until it is called the generator is seeded from the OS (like PyTorch).

An initialiser is ``f(fan_in, fan_out, rng) -> array`` of shape
``(fan_in, fan_out)`` (the built-in ones also take ``shape=``: the same
distribution drawn in another shape, as a conv kernel's); ``Dense(init=...)``
takes one of these names or such a callable:

==================  ===========================================  ==============
name                distribution                                 used for
==================  ===========================================  ==============
``he_uniform``      U(-b, b), b = sqrt(6 / fan_in)               ReLU family
``he_normal``       N(0, 2 / fan_in)
``glorot_uniform``  U(-b, b), b = sqrt(6 / (fan_in + fan_out))   everything else
``glorot_normal``   N(0, 2 / (fan_in + fan_out))
``lecun_uniform``   U(-b, b), b = sqrt(3 / fan_in)
``lecun_normal``    N(0, 1 / fan_in)
``zeros``           0
==================  ===========================================  ==============

He keeps the activation variance constant through ReLU layers (He et al.
2015); Glorot (Glorot & Bengio 2010) does so for symmetric activations.
"""
import contextlib
import math

import numpy as np

__all__ = ["manual_seed", "get_generator", "INITIALIZERS", "he_uniform", "he_normal",
           "glorot_uniform", "glorot_normal", "lecun_uniform", "lecun_normal", "zeros"]

_generator = np.random.default_rng()
# While key_stream(...) is active: the [state] of the splitmix64 stream that
# next_key draws from instead of _generator.
_stream = None
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def manual_seed(seed):
    """Seed the generator behind weight initialisers, Dropout and anything else
    in nncore that draws random numbers. ``seed``: a non-negative int."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"manual_seed: seed must be >= 0, got {seed}")
    _generator = np.random.default_rng(int(seed))


def get_generator():
    """The current ``numpy.random.Generator`` (replaced by ``manual_seed``)."""
    return _generator


def next_key():
    """A fresh 64-bit key from the generator (Dropout's counter-based masks),
    or from the active ``key_stream``."""
    if _stream is not None:
        _stream[0] = (_stream[0] + _GOLDEN) & _MASK64
        return _splitmix64(_stream[0])
    return int(_generator.bit_generator.random_raw())


def _splitmix64(z):
    """The splitmix64 output function (Steele, Lea and Flood 2014): a
    bijective mix of 64 bits, so distinct states give distinct keys."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


@contextlib.contextmanager
def key_stream(key, index):
    """Inside the block, ``next_key`` returns the keys of a stream fixed by
    ``(key, index)`` (two ints; a splitmix64 sequence from a start mixed from
    both) and leaves the generator alone.

    Sharded training uses it: the Dropout masks of shard ``index`` of a step
    then depend on the step's key and the shard only, not on which process
    computes the shard or how many shards it computed before. Costs a few
    integer operations per key, no generator construction."""
    global _stream
    previous = _stream
    _stream = [_splitmix64((int(key) + _splitmix64(int(index) & _MASK64)) & _MASK64)]
    try:
        yield
    finally:
        _stream = previous


def _uniform(bound, fan_in, fan_out, rng, shape):
    return rng.uniform(-bound, bound, size=shape or (fan_in, fan_out))


def he_uniform(fan_in, fan_out, rng, shape=None):
    return _uniform(math.sqrt(6.0 / fan_in), fan_in, fan_out, rng, shape)


def he_normal(fan_in, fan_out, rng, shape=None):
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape or (fan_in, fan_out))


def glorot_uniform(fan_in, fan_out, rng, shape=None):
    return _uniform(math.sqrt(6.0 / (fan_in + fan_out)), fan_in, fan_out, rng, shape)


def glorot_normal(fan_in, fan_out, rng, shape=None):
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape or (fan_in, fan_out))


def lecun_uniform(fan_in, fan_out, rng, shape=None):
    return _uniform(math.sqrt(3.0 / fan_in), fan_in, fan_out, rng, shape)


def lecun_normal(fan_in, fan_out, rng, shape=None):
    return rng.normal(0.0, math.sqrt(1.0 / fan_in), size=shape or (fan_in, fan_out))


def zeros(fan_in, fan_out, rng, shape=None):
    return np.zeros(shape or (fan_in, fan_out))


INITIALIZERS = {f.__name__: f for f in (he_uniform, he_normal, glorot_uniform,
                                        glorot_normal, lecun_uniform, lecun_normal, zeros)}
