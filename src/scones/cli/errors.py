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


# What to do, after botocore's own sentence, when a command that reaches AWS finds no
# account to reach (every command with --stack or named resources).
AWS_SETUP_ADVICE = {
    "NoRegionError": (
        "pass --region, or set AWS_DEFAULT_REGION, or a region in ~/.aws/config for the profile"
    ),
    "NoCredentialsError": (
        "configure them (`aws configure`, or `aws configure sso`), or set AWS_PROFILE, or "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    ),
}


def aws_setup_advice(exc: BaseException) -> str | None:
    """What to do about a botocore error that says no AWS account is configured, or None."""
    if type(exc).__module__ != "botocore.exceptions":
        return None
    return AWS_SETUP_ADVICE.get(type(exc).__name__)


def with_aws_setup_advice(exc: BaseException) -> str:
    """botocore's sentence, followed by what to do when it is about the setup."""
    advice = aws_setup_advice(exc)
    return f"{str(exc).rstrip('.')}: {advice}" if advice else str(exc)
