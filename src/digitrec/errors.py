"""The exceptions digitrec raises on bad input; the CLI turns each into one line and a non-zero exit."""


class DigitrecError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""


class DataError(DigitrecError):
    """A data file is missing, truncated, corrupt or fails its checksum."""


class UsageError(DigitrecError):
    """An argument value is not acceptable (unknown model, bad number, ...)."""


class CheckpointError(DigitrecError):
    """A checkpoint or model card cannot be read or does not match."""


class UnknownModelError(CheckpointError, UsageError):
    """No bundled model has that name: a checkpoint problem to the API, a usage error (exit 2) to the CLI."""


class ImageError(DigitrecError):
    """An input image cannot be decoded or is unusable."""
