"""Import moto's EC2 region list from one boto3 session instead of three.

moto 5.2.5 builds ``RegionsAndZonesBackend.regions`` as
``moto.ec2.models.availability_zones_and_regions`` is imported (moto's Step Functions
interpreter imports it, through ``moto.batch``): three calls of
``boto3.Session().get_available_regions("ec2", ...)``, one per partition, each on a new
session that loads EC2's service model (the largest botocore has) again, about 0.5 s of
every import of the offline stack. Importing this module imports that one with the
three calls answered by one session, so the model is loaded once: the lists are
botocore's, computed as before. The patch holds only during that import.

A guard test checks that moto still makes those calls at that import and that its
regions are the unpatched ones, so an upgrade that moves or drops them fails loudly
and this module can go.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import boto3.session

from scones.offline.client import REGION
from scones.offline.user_configuration import hidden_user_configuration

REGIONS_MODULE = "moto.ec2.models.availability_zones_and_regions"
SERVICE = "ec2"

# The (service, partition) of each call the one session answered at the import (a test
# reads it): empty when moto made none, or the module was already imported.
answered: list[tuple[str, str]] = []


@contextlib.contextmanager
def _ec2_regions_from_one_session() -> Iterator[None]:
    original = boto3.session.Session.get_available_regions
    shared: list[boto3.session.Session] = []
    lock = threading.Lock()

    def get_available_regions(
        self: boto3.session.Session,
        service_name: str,
        partition_name: str = "aws",
        allow_non_regional: bool = False,
    ) -> Any:
        if service_name != SERVICE:
            return original(self, service_name, partition_name, allow_non_regional)
        with lock:
            if not shared:
                shared.append(boto3.session.Session())
            answered.append((service_name, partition_name))
            return original(shared[0], service_name, partition_name, allow_non_regional)

    boto3.session.Session.get_available_regions = get_available_regions
    try:
        yield
    finally:
        boto3.session.Session.get_available_regions = original


if REGIONS_MODULE not in sys.modules:
    # moto's session at that import reads the user's AWS settings (a missing profile
    # fails it), which the offline stack never uses.
    with hidden_user_configuration(REGION), _ec2_regions_from_one_session():
        importlib.import_module(REGIONS_MODULE)
