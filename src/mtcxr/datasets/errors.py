"""Errors for whole-input dataset faults."""


class DatasetError(ValueError):
    """The dataset as a whole cannot be read; the message names the file or column and the fix."""
