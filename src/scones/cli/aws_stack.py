"""A deployed stack's outputs, as the commands that take ``--stack NAME`` read them."""

from __future__ import annotations

from typing import Any

from scones.cli.errors import CommandFailed, aws_setup_advice, with_aws_setup_advice


def stack_outputs(session: Any, stack: str, endpoint_url: str | None = None) -> dict[str, str]:
    """``{OutputKey: OutputValue}`` of ``stack``; ``CommandFailed`` names the region asked
    when it cannot be read (a stack deployed to another region is the usual reason)."""
    from botocore.exceptions import BotoCoreError, ClientError

    cloudformation = session.client("cloudformation", endpoint_url=endpoint_url)
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except (ClientError, BotoCoreError) as exc:
        region = cloudformation.meta.region_name
        if aws_setup_advice(exc):
            raise CommandFailed(
                f"cannot read stack {stack!r}: {with_aws_setup_advice(exc)}"
            ) from exc
        raise CommandFailed(
            f"cannot read stack {stack!r} in {region}: {exc} (another region: --region)"
        ) from exc
    # CloudFormation leaves Outputs out while a stack has none (one still being created).
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
