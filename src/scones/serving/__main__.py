"""``python -m scones.serving [FLAGS]``: the model server on its own, as the container runs it.

Its defaults are SageMaker's container contract, overridable from the environment
(:func:`scones.serving.command.container_defaults`): the model in /opt/ml/model,
every interface, port 8080 or ``SAGEMAKER_BIND_TO_PORT``, bodies up to
InvokeEndpoint's 6 MB. It imports only the server, the model loader and
``scones_core``: no CLI, no template, no training or offline-stack packages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from scones.serving.command import (
    CONTAINER_HELP,
    ServeError,
    add_arguments,
    container_defaults,
    resolve,
    serve,
)

PROG = "python -m scones.serving"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Serve a model artifact the way SageMaker hosting calls a container: GET /ping "
            "and POST /invocations, plus POST /endpoints/NAME/invocations for boto3's "
            "sagemaker-runtime client."
        ),
    )
    add_arguments(parser, CONTAINER_HELP)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return serve(resolve(args, container_defaults(environ)))
    except ServeError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
