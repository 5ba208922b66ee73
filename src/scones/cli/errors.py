"""Errors a subcommand raises to report a user-facing problem."""


class CommandError(Exception):
    """Printed as ``scones: error: ...``; the process exits with code 2."""
