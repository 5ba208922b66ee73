"""Guard on ``scones.offline.moto_ec2_regions``: moto's EC2 regions, imported from one
boto3 session, are the ones moto builds by itself.

Each check runs in a new interpreter: moto.ec2 is imported once per process, and this
one imported it long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from scones.offline import moto_ec2_regions

_DUMP_REGIONS = """
import json
import boto3.session
from moto.ec2.models.availability_zones_and_regions import RegionsAndZonesBackend
regions = [[r.name, r.endpoint, r.opt_in_status] for r in RegionsAndZonesBackend.regions]
restored = boto3.session.Session.get_available_regions.__module__ == "boto3.session"
print(json.dumps({"regions": regions, "restored": restored, "answered": ANSWERED}))
"""


def _imported(first: str, answered: str) -> dict[str, object]:
    script = textwrap.dedent(first) + _DUMP_REGIONS.replace("ANSWERED", answered)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_moto_still_lists_ec2_regions_at_import_and_one_session_gives_the_same_lists() -> None:
    """When this fails, moto no longer asks boto3 for EC2's regions as that module is
    imported (or asks otherwise): scones.offline.moto_ec2_regions must go or change."""
    raw = _imported("", "[]")
    fixed = _imported("from scones.offline import moto_ec2_regions\n", "moto_ec2_regions.answered")
    partitions = ["aws", "aws-us-gov", "aws-cn"]
    # Each of moto's three calls was answered by the one session...
    assert fixed["answered"] == [[moto_ec2_regions.SERVICE, p] for p in partitions]
    # ... giving moto exactly the regions it builds unpatched, in the same order.
    assert fixed["regions"] == raw["regions"]
    assert {region[0] for region in raw["regions"]} >= {"us-east-1", "us-gov-west-1"}
    # The patch held only during the import.
    assert fixed["restored"] and raw["restored"]


def test_the_stack_imports_moto_ec2_through_the_fix() -> None:
    """Importing the offline stack answers moto's EC2 region calls from one session: the
    fix runs before anything imports moto's interpreter."""
    fixed = _imported(
        "import scones.offline.stack\nfrom scones.offline import moto_ec2_regions\n",
        "moto_ec2_regions.answered",
    )
    assert len(fixed["answered"]) == 3  # type: ignore[arg-type]
