"""Errors a subcommand raises to report a user-facing problem.

Both are printed as ``scones: error: ...``. The exit code tells a script which kind it
was: 2 (argparse's own code) when the command was asked for something it cannot do, 1
when it was asked correctly and the work failed, as for an ``OSError`` or an AWS error.
"""


class CommandError(Exception):
    """A usage or input error: a bad option, file or setting. Exit code 2."""

    exit_code = 2


class CommandFailed(CommandError):
    """The request was sound but the work failed: no stack running, a stack that would
    not start or stop, a port in use, an AWS call refused. Exit code 1."""

    exit_code = 1
