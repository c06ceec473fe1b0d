"""The errors a user sees as one line (``uda: error: ...``, exit status 2), never as a traceback.

Each layer raises its own subclass: ``ConfigError`` (a setting), ``DataError`` (a dataset file,
``uda.data.files``), ``CheckpointError`` (a checkpoint, ``uda.engine.checkpoint``).
"""


class UserError(Exception):
    """A mistake in the user's input: printed as one line, never as a traceback."""


class ConfigError(UserError):
    """A setting that is out of range, inconsistent with another, or names something that does not exist."""
