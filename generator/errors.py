"""The one error base class: every error a user can cause or fix is a `TritongenError`.

The CLI prints these as one message (no traceback) and exits 1; anything else is a bug.
"""


class TritongenError(Exception):
    """An error with a message meant for the user (names the file, field or model and the cause)."""
