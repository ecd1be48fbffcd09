"""Errors that the CLI turns into one readable line instead of a traceback."""


class LightningRectError(Exception):
    """Base class: a problem the user can fix (bad config value, missing file, bad checkpoint)."""


class ConfigError(LightningRectError, ValueError):
    """A configuration value is invalid; the message names the field and what is allowed."""


class DataFileError(LightningRectError, FileNotFoundError):
    """A data file is missing or malformed; the message names the file and where to get it."""


class CheckpointError(LightningRectError):
    """A checkpoint cannot be used; the message says why and how to fix it."""


class DivergenceError(LightningRectError):
    """The training loss became NaN or infinite."""


class NonFiniteInputError(LightningRectError):
    """A training, validation or test batch holds NaN or infinite inputs."""


class StorageError(LightningRectError, OSError):
    """A file or folder cannot be written (read-only, full, no permission); the message names it and the fix."""
