"""The base of every error a user can fix from its message alone."""


class InputError(Exception):
    """A fault in the user's input or config; its message names the file, column or key and the fix.

    Workflow scripts and the pre-flight check print such an error as its message alone,
    without a traceback (`mtcxr.logs`, `mtcxr.preflight.stop_on_input_error`).
    """
