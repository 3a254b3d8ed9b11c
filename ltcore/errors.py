"""The errors ltcore reports to its users.

Every error a user can fix (bad option, missing data, plugin trouble, a diverging loss) is an
``LtcoreError``: the CLI prints its message as one paragraph and exits non-zero, without a
traceback unless ``--debug`` is given.
"""

import re


class LtcoreError(Exception):
    """An error the user can act on; its message says what went wrong and what to do."""

    exit_code = 2


class ConfigError(LtcoreError):
    """An unknown configuration key, an invalid value or an unknown preset."""


class PluginError(LtcoreError):
    """A plugin that cannot be found, loaded, combined or that breaks a hook contract."""


class DataError(LtcoreError):
    """Missing, unreadable or malformed data."""


class NonFiniteLossError(LtcoreError):
    """A loss term became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3


class RunFinished(LtcoreError):
    """``ltrun --resume`` of a run that has finished: the message says so and how to train it
    longer. Not a failure: the CLI prints it and exits 0."""

    exit_code = 0


class RunBusy(LtcoreError):
    """Another process trains the run already (``ltrun --resume`` of a run being trained): the
    message names that process."""


class RunStopped(LtcoreError):
    """SIGTERM, SIGINT or SIGHUP stopped the run at a step boundary with a checkpoint, or a
    second signal stopped it at once (its last checkpoint kept)."""

    def __init__(self, message: str, signal_name: str, where: str):
        super().__init__(message)
        import signal

        self.signal_name = signal_name
        self.where = where
        named = re.search(r"SIG[A-Z]+", signal_name)  # "a signal to another rank (SIGTERM ...)"
        self.exit_code = 128 + int(getattr(signal, named.group() if named else "SIGTERM"))


class DeviceMemoryError(LtcoreError):
    """The training device ran out of memory; the message says which batch size to lower."""


class TrackingError(LtcoreError):
    """The MLflow tracking store cannot be reached or refused a write."""


class StorageError(LtcoreError):
    """A file could not be written (no space left, a quota, a read-only disk); the previous
    version of the file is kept."""


class RankFailure(LtcoreError):
    """A rank of a distributed run failed, or stopped answering the others, and so the run
    ended; the message names the rank and its error."""


OUT_OF_MEMORY = ("out of memory", "can't allocate memory")
"""What torch's reports of a failed allocation say: a GPU's (``torch.OutOfMemoryError``) or the
CPU allocator's (a ``RuntimeError``)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's report that an allocation failed, on a GPU or the CPU."""
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in OUT_OF_MEMORY)


def out_of_memory_message(exc: BaseException) -> str:
    """torch's report of a failed allocation outside a training step, in one line: which memory ran
    out, how much was asked for and what to lower."""
    text = str(exc)
    memory = "CPU memory" if "can't allocate memory" in text else "GPU memory"
    in_bytes = re.search(r"allocate (\d+) bytes", text)
    stated = re.search(r"allocate ([\d.]+ [KMGTP]?i?B)", text)
    asked = (f"{int(in_bytes.group(1)) / 2**30:,.1f} GiB" if in_bytes
             else stated.group(1) if stated else "more than was free")
    return (f"out of {memory}: an allocation of {asked} failed; lower the sizes the settings "
            f"ask for (--batch-size, eval.batch_size, the model's widths such as "
            f"model.projection_hidden) or use a machine with more memory")
