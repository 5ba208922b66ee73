"""The areas of the one bucket, and which of them must not lie inside another.

Every upload under the incoming prefix is classified, so an area the stack itself writes
to (capture files, reports, labelled copies, retraining data) must not lie under it, nor
it under them; and retraining reads its four areas as separate data sets. The template
cannot say this (a ``Rules`` assertion has no "starts with"), so the deployment check and
the functions that read these prefixes ask this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# A key prefix as the template's AllowedPattern for folder prefixes takes it: one or more
# folder names, each ending in "/", with no "*" (a wildcard in the IAM grants built from
# it), no leading "/" and no empty folder ("//").
FOLDER_PREFIX = re.compile(r"^([A-Za-z0-9!_.'()-]+/)+$")

# Template parameters naming an area of the bucket, and whether each is a folder written
# without its final "/" (DataCapturePrefix), or a single object's key (BaselineKey).
INCOMING = "IncomingPrefix"
RETRAINING_AREAS = (
    "TrainingDataPrefix",
    "LabelledDataPrefix",
    "GateDataPrefix",
    "RetrainingPrefix",
)
OTHER_AREAS = (
    "DataCapturePrefix",
    "MonitoringReportsPrefix",
    "BaselineKey",
    "BackfillResultsPrefix",
)
# Areas a lifecycle rule of the bucket expires: no other area may lie inside one (its data
# would be deleted with them) or contain one. IncomingPrefix, expired by its own rule, is
# checked against every area above already.
EXPIRING_AREAS = ("DataCapturePrefix", "BackfillResultsPrefix")
_WITHOUT_SLASH = frozenset({"DataCapturePrefix", "MonitoringReportsPrefix"})
_KEYS = frozenset({"BaselineKey"})


def parse_folder_prefix(value: str) -> str:
    """``value`` if it is a folder prefix such as ``labelled/`` (for ``EnvReader.parsed``)."""
    if not FOLDER_PREFIX.match(value):
        raise ValueError(
            "must be a key prefix of folder names each ending in '/', such as 'labelled/' "
            "(no leading '/', no '//', no '*')"
        )
    return value


def nested_pairs(areas: Mapping[str, str], pairs: Iterable[tuple[str, str]]) -> list[str]:
    """ "A='x' and B='y'" for each pair whose areas lie one inside the other."""
    found = []
    for a, b in pairs:
        if a in areas and b in areas:
            pa, pb = _area(a, areas[a]), _area(b, areas[b])
            # A single object's key can lie inside a folder, never a folder inside it.
            inside = (a not in _KEYS and pb.startswith(pa)) or (
                b not in _KEYS and pa.startswith(pb)
            )
            if inside:
                found.append(f"{a}={areas[a]!r} and {b}={areas[b]!r}")
    return found


def retraining_pairs(names: Iterable[str] = RETRAINING_AREAS) -> list[tuple[str, str]]:
    """Every pair of the retraining areas: each is a separate data set."""
    ordered = list(names)
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :]]


def layout_problems(parameters: Mapping[str, str]) -> list[str]:
    """What is wrong with the bucket's layout as these template parameter values set it."""
    problems = [
        f"{pair}: one lies inside the other, and every object under IncomingPrefix is "
        "classified as an upload"
        for pair in nested_pairs(
            parameters, [(INCOMING, name) for name in (*RETRAINING_AREAS, *OTHER_AREAS)]
        )
    ]
    problems += [
        f"{pair}: the retraining areas are separate data sets and must not contain each other"
        for pair in nested_pairs(parameters, retraining_pairs())
    ]
    others = (*RETRAINING_AREAS, *OTHER_AREAS)
    problems += [
        f"{pair}: one lies inside the other, and a lifecycle rule expires every object under "
        f"{expiring} (the other's data would be deleted with it)"
        for index, expiring in enumerate(EXPIRING_AREAS)
        for pair in nested_pairs(
            parameters,
            [(expiring, name) for name in others if name not in EXPIRING_AREAS[: index + 1]],
        )
    ]
    return problems


def _area(name: str, value: str) -> str:
    return f"{value}/" if name in _WITHOUT_SLASH else value


def labelled_copy_key(labelled_prefix: str, label: str, name: str) -> str:
    """Where a person's answer puts its image for training: ``<LabelledDataPrefix><label>/
    <name>``, the ``<label>/<name>`` layout a training channel reads
    (``retraining.dataset``)."""
    return f"{labelled_prefix}{label}/{name}"
