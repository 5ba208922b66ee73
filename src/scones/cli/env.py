"""``scones env``: the environment variables that point AWS tools at the running stack.

``eval "$(scones env)"`` in a shell, and the AWS CLI, boto3 and every SDK that reads
``AWS_ENDPOINT_URL`` reach the offline stack that ``scones up`` keeps running, past a proxy
the shell names (``scones.no_proxy``).
"""

from __future__ import annotations

import argparse
import json
import shlex

from scones.cli.stack_state import client_from_state


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "env",
        help="print the AWS_* variables that reach the running stack (export form)",
        description=(
            "Print AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, AWS_DEFAULT_REGION and "
            "placeholder credentials for the stack that `scones up` runs, and, when the "
            "environment names a proxy (HTTP_PROXY, HTTPS_PROXY), NO_PROXY with the loopback "
            "names added to its own entries, so the calls reach the stack directly. "
            'Use: eval "$(scones env)"'
        ),
    )
    parser.add_argument("--json", action="store_true", help="print them as a JSON object")
    parser.set_defaults(handler=env_command)


def export_lines(environment: dict[str, str]) -> str:
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in environment.items())


def env_command(args: argparse.Namespace) -> int:
    environment = client_from_state().endpoints.aws_environment()
    print(json.dumps(environment, indent=2) if args.json else export_lines(environment))
    return 0
