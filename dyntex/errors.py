"""The project's own error types.

The library raises these with a message a user can act on; only ``cli.py`` prints them and
chooses the exit code (see the README's bad-input table).
"""


class DyntexError(Exception):
    """Base class: anything dyntex reports to a user as one line."""


class InputError(DyntexError):
    """A video, image, folder or array that cannot be used as training or evaluation data."""


class ConfigError(DyntexError):
    """An unknown, wrongly typed or out-of-range setting."""


class CheckpointError(DyntexError):
    """A run folder or checkpoint that is missing, corrupt, unsafe or from another model."""


class OutputError(DyntexError):
    """An output location that cannot be written."""


class DivergenceError(DyntexError):
    """Training diverged and could not be recovered within the configured retries."""


class InputWarning(UserWarning):
    """An input was usable only in part (truncated file, skipped entries of a folder): the
    ``dyntex`` command prints it as one ``warning: ...`` line."""
