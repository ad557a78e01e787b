"""Errors for whole-input dataset faults."""

from mtcxr.errors import InputError


class DatasetError(InputError, ValueError):
    """The dataset as a whole cannot be read; the message names the file or column and the fix."""
