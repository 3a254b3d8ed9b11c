"""The errors ltcore reports to its users.

Every error a user can fix (bad option, missing data, plugin trouble, a diverging loss) is an
``LtcoreError``: the CLI prints its message as one paragraph and exits non-zero, without a
traceback unless ``--debug`` is given.
"""


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


class TrackingError(LtcoreError):
    """The MLflow tracking store cannot be reached or refused a write."""
