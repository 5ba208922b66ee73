"""Suite-wide hooks."""

from __future__ import annotations

import functools
import gc
import os
import pickle
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from hypothesis import settings

# Property tests: the same examples on every run (a failure in CI can be run again as it
# was), and no per-example time limit, which a loaded 2-core machine can pass with any
# example: speed is measured in the benchmarks, never asserted in a test.
settings.register_profile("suite", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("suite")


# botocore's data files that nothing edits once loaded: every session in this process
# shares one parsed document of each, as it shares each service model (with its
# ``sdk-extras`` merged), and ``_shared_botocore_documents_stay_unchanged`` checks that
# each is unchanged (but for botocore's S3 bucket-path edit, the same in every session).
# botocore's endpoint resolver edits the entries of ``endpoints.json``
# it resolves: each session gets its own copy of that, and of any other file.
SHARED_BOTOCORE_FILES = ("partitions.json", "endpoint-rule-set-1.json")
ENDPOINTS_FILE = "endpoints.json"
_shared_documents: dict[str, tuple[object, bytes]] = {}
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class _ServicesOnDemand(Mapping[str, object]):
    """A partition's ``services`` in ``endpoints.json``, each service's entry unpickled
    the first time it is read: a session resolves endpoints for a few services, and
    copying all of them (over 300 in each partition) was most of what a session cost."""

    def __init__(self, frozen: dict[str, bytes]) -> None:
        self._frozen = frozen
        self._read: dict[str, object] = {}

    def __getitem__(self, name: str) -> object:
        if name not in self._read:
            self._read[name] = pickle.loads(self._frozen[name])
        return self._read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._frozen)

    def __len__(self) -> int:
        return len(self._frozen)


def _endpoints_copier(document: dict[str, Any]) -> Callable[[], object]:
    """What makes each session's copy of ``endpoints.json``: its partitions copied whole
    but for their services, which are copied as they are read."""
    services = [
        {name: pickle.dumps(entry) for name, entry in partition["services"].items()}
        for partition in document["partitions"]
    ]
    skeleton = {
        **document,
        "partitions": [
            {k: v for k, v in partition.items() if k != "services"}
            for partition in document["partitions"]
        ],
    }
    frozen = pickle.dumps(skeleton, _PROTOCOL)

    def copy() -> object:
        fresh = pickle.loads(frozen)
        for partition, entries in zip(fresh["partitions"], services, strict=True):
            partition["services"] = _ServicesOnDemand(entries)
        return fresh

    return copy


def _parse_botocore_data_once() -> None:
    """Parse each of botocore's data files once per test process, not once per session.

    botocore caches what it loads per ``Session``; the tests make thousands of sessions
    (moto gives each mocked test a session of its own, and every stubbed or emulated
    client set makes one), and each parsed ``endpoints.json``, the endpoint rules and the
    service models again (``json.loads`` into ``OrderedDict``): about a third of the CPU
    of the deployment tests. A document nothing edits (``SHARED_BOTOCORE_FILES``, and each
    service model as ``Loader.load_service_model`` returns it) is shared as parsed;
    ``endpoints.json`` is copied as it is read (``_ServicesOnDemand``); any other is kept
    pickled, and each load gets a fresh copy, three to four times faster than parsing. The
    files are botocore's own, keyed by their full path, so a test that
    points ``AWS_DATA_PATH`` elsewhere still reads its own. Only this process's sessions
    are affected; the commands and stacks the tests start as processes parse as anywhere.
    """
    from botocore.loaders import JSONFileLoader

    parse = JSONFileLoader._load_file
    if getattr(parse, "parses_once", False):  # this file imported again, as tests.conftest
        return
    copiers: dict[str, Callable[[], object]] = {}

    def load(loader: JSONFileLoader, full_path: str, open_method: object) -> object:
        if full_path in _shared_documents:
            return _shared_documents[full_path][0]
        if full_path not in copiers:
            document = parse(loader, full_path, open_method)
            if document is None:  # no such file: asked again, looked for again
                return None
            name = os.path.basename(full_path).removesuffix(".gz")
            if name in SHARED_BOTOCORE_FILES:
                _shared_documents[full_path] = (document, pickle.dumps(document, _PROTOCOL))
                return document
            if name == ENDPOINTS_FILE and isinstance(document, dict):
                copiers[full_path] = _endpoints_copier(document)
            else:
                copiers[full_path] = functools.partial(
                    pickle.loads, pickle.dumps(document, _PROTOCOL)
                )
        return copiers[full_path]()

    load.parses_once = True  # type: ignore[attr-defined]
    JSONFileLoader._load_file = load  # type: ignore[method-assign]

    from botocore.loaders import Loader

    load_model = Loader.load_service_model

    def load_service_model(
        loader: Loader, service_name: str, type_name: str, api_version: str | None = None
    ) -> object:
        key = repr((service_name, type_name, api_version, loader.search_paths, loader.extras_types))
        if key not in _shared_documents:
            model = load_model(loader, service_name, type_name, api_version)
            _shared_documents[key] = (model, pickle.dumps(model, _PROTOCOL))
        return _shared_documents[key][0]

    Loader.load_service_model = load_service_model  # type: ignore[method-assign]


_parse_botocore_data_once()

# What a corporate laptop or CI runner sets (Python reads either spelling).
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")


def _proxy_variables() -> list[str]:
    return [name for name in os.environ if name.lower().endswith("_proxy")]


@pytest.fixture
def proxy_environment() -> Iterator[str]:
    """The environment names a proxy that refuses every connection (``PROXY_VARIABLES``)
    and no ``NO_PROXY``; its URL. A test may set ``os.environ``'s ``*_proxy`` variables
    freely: all of them, those scones adds too, are put back as they were."""
    saved = {name: os.environ[name] for name in _proxy_variables()}
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: a connection is refused
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for name in saved:
        del os.environ[name]
    os.environ.update(dict.fromkeys(PROXY_VARIABLES, url))
    try:
        yield url
    finally:
        for name in _proxy_variables():
            del os.environ[name]
        os.environ.update(saved)
        closed.close()


def _without_bucket_path_edits(document: object) -> object:
    """``document`` with the one edit botocore makes to a loaded model undone: the first call
    of an S3 operation strips ``/{Bucket}`` from its ``requestUri`` and keeps the original
    path as ``authPath`` (``handlers.remove_bucket_from_url_paths_from_model``). The edit
    is the same whichever session makes it, and one that finds it made does nothing."""
    operations = document.get("operations") if isinstance(document, dict) else None
    if not isinstance(operations, dict) or not any(
        "authPath" in operation.get("http", {}) for operation in operations.values()
    ):
        return document
    restored: dict[str, Any] = pickle.loads(pickle.dumps(document))
    for operation in restored["operations"].values():
        http = operation.get("http", {})
        if "authPath" in http:
            del http["authPath"]
            http["requestUri"] = "/{Bucket}" + http["requestUri"]
    return restored


@pytest.fixture(scope="session", autouse=True)
def _shared_botocore_documents_stay_unchanged() -> Iterator[None]:
    """Fail the run if a test edited a botocore document its process's sessions share (but
    for botocore's own S3 path edit): the sharing would then have let one test see
    another's edit. (A fixture, so that each xdist worker reports it as an error of its
    last test.)"""
    yield
    edited = [
        path
        for path, (document, frozen) in _shared_documents.items()
        if _without_bucket_path_edits(document) != pickle.loads(frozen)
    ]
    if edited:
        pytest.fail(f"botocore documents shared between sessions were edited: {edited}")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Collect the session's garbage once, then let the collector skip what is left.

    After this hook pytest collects garbage five more times to surface exceptions raised
    in finalizers. With torch, moto and the ASL interpreter's grammar loaded, each full
    collection walks over a million objects; five of them can outlast the 5 s that
    execnet gives an xdist worker to end, after which it interrupts the worker
    (``KeyboardInterrupt`` inside whatever gc callback was running). Garbage that
    exists now is collected here, while pytest still reports what its finalizers
    raise; the survivors are moved out of the collector's way (``gc.freeze``), so the
    later collections only look at objects created after this point.
    """
    gc.collect()
    gc.freeze()


def express_machine(definition: dict[str, object], name: str = "classify") -> str:
    """An Express state machine of ``definition`` in the active moto; its ARN."""
    import json

    import boto3

    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    return str(
        sfn.create_state_machine(
            name=name,
            definition=json.dumps(definition),
            roleArn="arn:aws:iam::123456789012:role/sfn",
            type="EXPRESS",
        )["stateMachineArn"]
    )


@pytest.fixture
def express_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process moto that runs state machines (its interpreter), with the offline
    ``StartSyncExecution`` (moto routes none) and botocore's ``sync-`` host prefix off
    (moto's URL patterns lack it): what a start function waiting on Express runs needs;
    ``express_machine`` makes one."""
    from moto import mock_aws

    from scones.offline import sync_executions

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **sync_executions.HOST_PREFIX_ENVIRONMENT,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sync_executions.install()
        try:
            yield
        finally:
            sync_executions.uninstall()
