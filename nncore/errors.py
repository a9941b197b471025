"""Exceptions shared across nncore."""


class FormatError(ValueError):
    """A file is not in the format nncore expected: truncated, corrupt, from an
    unsupported version, hostile, or simply a different kind of file.

    Raised by ``nncore.load``/``nncore.io.read_archive`` and the dataset
    readers. The message names the file and what was wrong. Reading a file
    that raises this error never executes anything from it.
    """


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch
    and batch. Usually the learning rate is too high or the inputs unscaled."""
