"""Errors a user can cause and fix. The CLI prints the message and exits with code 2."""


class UserError(Exception):
    """One sentence that names the cause and the fix."""
