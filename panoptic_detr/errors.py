"""User-facing errors.

Anything the user can fix (a bad file, a missing key, a wrong option) raises a
`PanopticDetrError` whose message is one line naming the file and the item. The CLI
prints it as `error: <message>` and exits with code 2, without a traceback.
"""


class PanopticDetrError(Exception):
    """An error caused by the user's input, reported as one line at the CLI."""


class DataError(PanopticDetrError):
    """Bad dataset input: annotation files, images, class maps."""


class CheckpointError(PanopticDetrError):
    """A checkpoint that cannot be read or does not fit the model."""


class ConfigError(PanopticDetrError):
    """A configuration file or preset with unknown, missing or ill-typed keys."""
