"""The model server: SageMaker's container contract plus the sagemaker-runtime route.

Routes:

* ``GET /ping`` and ``POST /invocations``: what SageMaker hosting calls inside a
  container (port 8080).
* ``POST /endpoints/{name}/invocations``: what ``InvokeEndpoint`` calls, so a boto3
  ``sagemaker-runtime`` client reaches this server through
  ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` and gets SageMaker's answers and errors.
* ``GET|POST|DELETE /_faults``: the fault-injection admin route, only when a
  :class:`~scones.serving.faults.FaultPlan` is given. It answers only a loopback
  ``Host`` and takes only a JSON body, so no web page can arm it (see
  :func:`_fault_route_refusal`).

Like a SageMaker endpoint, the server hosts one or more production variants
(:class:`ProductionVariant`), each a model with a traffic weight and its own data
capture (files under ``{endpoint}/{variant}/``). A request goes to the variant its
``X-Amzn-SageMaker-Target-Variant`` header names, or else to one drawn by weight,
and the answer names it in ``x-Amzn-Invoked-Production-Variant``. Variants are
added, reweighted and removed while the server runs (``app.state.endpoint``), which
is how ``scones retrain`` runs a canary offline.

Inference (decode, model, capture) runs in a worker thread: onnxruntime and
Pillow release the GIL, so concurrent requests overlap instead of queueing on
the event loop. At most ``max_concurrency`` requests are in inference at once
(:class:`~scones.serving.limits.InferenceSlots`); the others wait up to
``queue_wait_s`` and are then refused as throttled. The body must arrive within
``body_timeout_s``; the request head's deadline is the protocol's
(:mod:`scones.serving.protocol`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from scones_core.endpoint_response import CUSTOM_ATTRIBUTES_HEADER, custom_attributes
from scones_core.errors import ImageRejected
from scones_core.image_rules import SUPPORTED_IMAGE_FORMATS, decode_image
from scones_core.settings import ImageLimits
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from scones.model.artifact import ModelAnswerError, ModelArtifactError, checked_answers
from scones.serving.capture import CaptureWriter
from scones.serving.defaults import (
    BODIES_PER_SLOT,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_QUEUE_WAIT_S,
    DEFAULT_VARIANT,
    RUNTIME_MAX_PAYLOAD_BYTES,
)
from scones.serving.errors import (
    ContainerError,
    ServiceCode,
    ServiceError,
    container_error_response,
    json_text,
    model_error,
    runtime_error_response,
)
from scones.serving.faults import Fault, FaultPlan, FaultSpecError
from scones.serving.invoke_headers import (
    TARGET_MODEL_NOT_SUPPORTED,
    field_value,
    invoke_header_problem,
    repeated_field_problem,
    target_container_problem,
    target_model_problem,
)
from scones.serving.limits import (
    BodyAccount,
    BodyBudget,
    InferenceSlots,
    ServerBusy,
    available_cpus,
    default_max_image_pixels,
)
from scones.serving.loopback import is_loopback_host
from scones.serving.media import SUPPORTED_CONTENT_TYPES, check_declared_format

LOGGER = logging.getLogger(__name__)

RESPONSE_CONTENT_TYPE = "application/json"
# nginx's code for "the client closed the request"; nothing is sent, it only names the case.
CLIENT_CLOSED_REQUEST = 499


class Classifier(Protocol):
    """What the server needs from a model (``OnnxClassifier`` provides it)."""

    @property
    def labels(self) -> tuple[str, ...]: ...

    @property
    def input_size(self) -> tuple[int, int]: ...

    def predict_images(self, images: list[Image.Image]) -> np.ndarray: ...


@dataclass
class ProductionVariant:
    """One model behind the endpoint: SageMaker's production variant, offline."""

    name: str
    classifier: Classifier
    weight: float = 1.0
    capture: CaptureWriter | None = None
    # Faults of this variant only (a canary whose model fails); the endpoint's own
    # FaultPlan, armed through /_faults, applies to every variant.
    faults: FaultPlan | None = None
    # What SageMaker publishes per variant (AWS/SageMaker Invocations, Invocation4XXErrors,
    # Invocation5XXErrors), counted for InvokeEndpoint requests.
    invocations: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    # The model's version in CustomAttributes, so each record names its model: built once,
    # so a version that cannot travel in the header stops the variant from being created
    # instead of failing every request.
    response_headers: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        version = self.model_version
        try:
            self.response_headers = (
                {CUSTOM_ATTRIBUTES_HEADER: custom_attributes(version)} if version else {}
            )
        except ValueError as exc:
            raise ModelArtifactError(f"variant {self.name}: {exc}") from exc

    @property
    def model_version(self) -> str | None:
        return getattr(getattr(self.classifier, "manifest", None), "version", None)

    def describe(self) -> dict[str, Any]:
        manifest = getattr(self.classifier, "manifest", None)
        return {
            "name": self.name,
            "weight": self.weight,
            "model": getattr(manifest, "name", None),
            "model_version": self.model_version,
            "invocations": self.invocations,
            "errors_4xx": self.errors_4xx,
            "errors_5xx": self.errors_5xx,
        }


class _PayloadTooLarge(Exception):
    def __init__(self, size: int, exact: bool) -> None:
        super().__init__(size)
        self.size = size
        self.exact = exact

    def describe(self, limit: int) -> str:
        amount = f"{self.size} bytes" if self.exact else f"more than {limit} bytes"
        return f"request body is {amount}; the limit is {limit} bytes"


class _BodyTimeout(Exception):
    def __init__(self, timeout_s: float, received: int) -> None:
        super().__init__(
            f"request body not received within {timeout_s:g} s ({received} bytes arrived)"
        )


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _check_content_type(header: str | None, encoding: str | None) -> None:
    media_type = _media_type(header)
    if media_type not in SUPPORTED_CONTENT_TYPES:
        shown = f"{header!r}" if header else "missing"
        raise ContainerError(
            415,
            f"unsupported Content-Type {shown}; send one of {', '.join(SUPPORTED_CONTENT_TYPES)}",
            close=True,
        )
    codings = [coding.strip().lower() for coding in (encoding or "").split(",")]
    if any(coding not in ("", "identity") for coding in codings):
        raise ContainerError(
            415,
            f"unsupported Content-Encoding {encoding!r}; send the image bytes as they are "
            "(images are compressed already)",
            close=True,
        )


def _json_quality(header: str) -> float:
    """The weight ``header`` gives the JSON answer: that of its most specific range that
    matches (``application/json`` over ``application/*`` over ``*/*``, RFC 9110 12.5.1),
    0 when none does. ``q=0`` means "not this"; a malformed weight counts as 1."""
    best: tuple[int, float] = (-1, 0.0)
    major = RESPONSE_CONTENT_TYPE.split("/", 1)[0]
    for part in header.split(","):
        media_type = _media_type(part)
        specificity = {RESPONSE_CONTENT_TYPE: 2, f"{major}/*": 1, "*/*": 0}.get(media_type)
        if specificity is None or specificity < best[0]:
            continue
        weight = 1.0
        for parameter in part.split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 1.0
        best = (specificity, weight)
    return best[1]


def _check_accept(header: str | None) -> None:
    if not header:
        return
    if _json_quality(header) <= 0:
        raise ContainerError(
            406,
            f"cannot answer with Accept {header!r}; this model returns {RESPONSE_CONTENT_TYPE}",
            close=True,
        )


async def _read_body(
    request: Request,
    limit: int,
    body: bytearray | None = None,
    account: BodyAccount | None = None,
) -> bytes:
    """The request body, refusing more than ``limit`` bytes without buffering it all.

    uvicorn reads and discards whatever the app leaves unread, so the client
    still finishes sending and then reads the error. ``body`` collects the bytes
    as they arrive, for a caller that gives up early. ``account`` holds the body's
    bytes in the server's budget as they arrive (a declared length that cannot fit is
    refused before any is read).
    """
    declared = request.headers.get("content-length")
    if declared is None and "transfer-encoding" not in request.headers:
        # Without either, HTTP/1.1 reads the body as empty and whatever was sent as the
        # next request (RFC 9112 6.3).
        raise ContainerError(
            411, "the request has no Content-Length (and is not chunked); send one", close=True
        )
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise ContainerError(
                400, f"Content-Length {declared!r} is not a number", close=True
            ) from None
        if declared_size > limit:
            raise _PayloadTooLarge(declared_size, exact=True)
        if account is not None:
            # Refused at once if it cannot fit, but held only as it arrives: a connection
            # that declares a body and sends nothing holds none of the budget.
            account.check(declared_size)
    body = bytearray() if body is None else body
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _PayloadTooLarge(len(body), exact=False)
        if account is not None:
            account.take(len(chunk))
    return bytes(body)


async def _read_body_within(
    request: Request, limit: int, timeout_s: float, account: BodyAccount | None = None
) -> bytes:
    """:func:`_read_body` with a deadline for the whole body, so a slow sender is cut off.

    A body still arriving when the server stops (uvicorn cancels what is left after its
    graceful shutdown) is answered 503, retryable, rather than by uvicorn's bare 500.
    """
    received = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body(request, limit, received, account)
    except TimeoutError:
        raise _BodyTimeout(timeout_s, len(received)) from None
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # answered here: the request ends, nothing else is cancelled
        raise ContainerError(
            503,
            f"the model server is shutting down ({len(received)} bytes of the body had "
            "arrived); send the request again",
            close=True,
        ) from None


def decode_request_image(
    data: bytes, max_pixels: int, input_size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode a request body through the product's image rules (``scones_core``).

    The same rules as the workflow's serialize step (the pixel limit is checked from
    the header, before decoding), and the same reduced-scale JPEG decoding for the
    model's ``input_size`` (height, width); only the limits are the server's own.
    A broken rule is a 400 whose message is the rule's reason.
    """
    if not data:
        raise ContainerError(400, "request body is empty; send the image bytes")
    target = (input_size[1], input_size[0]) if input_size else (1, 1)
    limits = ImageLimits(
        max_bytes=len(data),
        max_pixels=max_pixels,
        min_side=1,
        allowed_formats=SUPPORTED_IMAGE_FORMATS,
        model_input_size=target,
        parameter_names=False,  # the server's limits are its own flags, not template parameters
    )
    try:
        return decode_image(data, limits, draft_to=target if input_size else None).image
    except ImageRejected as rejected:
        raise ContainerError(400, f"{rejected.code}: {rejected}") from None


_CONTAINER_FAULTS: dict[Fault, tuple[int, str]] = {
    Fault.UNAVAILABLE: (503, "injected fault: the model server is unavailable"),
    Fault.THROTTLE: (429, "injected fault: too many requests"),
    Fault.INTERNAL_FAILURE: (500, "injected fault: internal failure"),
    Fault.MODEL_ERROR: (500, "injected fault: the model failed"),
    Fault.BUSY: (429, "injected fault: the model server is busy"),
}


class _Endpoint:
    """The routes' behaviour around one loaded model."""

    def __init__(
        self,
        classifier: Classifier,
        *,
        endpoint_name: str,
        variant_name: str,
        max_body_bytes: int,
        max_image_pixels: int,
        slots: InferenceSlots,
        bodies: BodyBudget,
        body_timeout_s: float,
        capture: CaptureWriter | None,
        faults: FaultPlan | None,
    ) -> None:
        self.endpoint_name = endpoint_name
        self.max_body_bytes = max_body_bytes
        self.max_image_pixels = max_image_pixels
        self.slots = slots
        self.bodies = bodies
        self.body_timeout_s = body_timeout_s
        self.faults = faults
        self.runtime_limit = min(max_body_bytes, RUNTIME_MAX_PAYLOAD_BYTES)
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._variants = [ProductionVariant(variant_name, classifier, 1.0, capture)]

    # -- production variants --------------------------------------------------------

    @property
    def primary(self) -> ProductionVariant:
        """The first variant (the only one unless variants were added)."""
        with self._lock:
            return self._variants[0]

    @property
    def classifier(self) -> Classifier:
        return self.primary.classifier

    @property
    def variant_name(self) -> str:
        return self.primary.name

    @property
    def capture(self) -> CaptureWriter | None:
        return self.primary.capture

    def variants(self) -> list[ProductionVariant]:
        with self._lock:
            return list(self._variants)

    def add_variant(self, variant: ProductionVariant) -> None:
        """Serve another model beside the others (its capture writer is started here)."""
        _check_weight(variant.weight)
        if variant.classifier.input_size != self.classifier.input_size:
            raise ValueError(
                f"variant {variant.name} takes {variant.classifier.input_size} images; the "
                f"endpoint's take {self.classifier.input_size}"
            )
        with self._lock:
            if any(v.name == variant.name for v in self._variants):
                raise ValueError(f"variant {variant.name} already exists")
            self._variants.append(variant)
        if variant.capture is not None:
            variant.capture.start()

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """``UpdateEndpointWeightsAndCapacities``: new weights for named variants."""
        with self._lock:
            known = {v.name: v for v in self._variants}
            unknown = sorted(set(weights) - set(known))
            if unknown:
                raise ValueError(f"no such variant: {', '.join(unknown)}")
            for name, weight in weights.items():
                known[name].weight = _check_weight(weight)

    def remove_variant(self, name: str) -> ProductionVariant:
        """Stop routing to ``name``; its capture is flushed and closed. One must remain."""
        with self._lock:
            matches = [v for v in self._variants if v.name == name]
            if not matches:
                raise ValueError(f"no such variant: {name}")
            if len(self._variants) == 1:
                raise ValueError("an endpoint keeps at least one variant")
            self._variants.remove(matches[0])
        if matches[0].capture is not None:
            matches[0].capture.close()
        return matches[0]

    def seed_routing(self, seed: int) -> None:
        """Make the weighted draw repeatable (tests, reproducible offline runs)."""
        with self._lock:
            self._rng.seed(seed)

    def flush_captures(self) -> int:
        return sum(v.capture.flush() for v in self.variants() if v.capture is not None)

    def choose(self, target: str | None) -> ProductionVariant:
        """The named variant, or one drawn by weight (as SageMaker routes traffic)."""
        with self._lock:
            if target:
                for variant in self._variants:
                    if variant.name == target:
                        return variant
                names = ", ".join(v.name for v in self._variants)
                raise ServiceError(
                    ServiceCode.VALIDATION_ERROR,
                    f"Variant {target} not found for endpoint {self.endpoint_name}; "
                    f"its variants are {names}.",
                )
            total = sum(v.weight for v in self._variants)
            if total <= 0:
                raise ServiceError(
                    ServiceCode.VALIDATION_ERROR,
                    f"Endpoint {self.endpoint_name} has no variant with a positive weight.",
                )
            point = self._rng.random() * total
            for variant in self._variants:
                point -= variant.weight
                if point < 0 and variant.weight > 0:
                    return variant
            return next(v for v in reversed(self._variants) if v.weight > 0)

    # -- inference, shared by both routes -----------------------------------------

    def predict(
        self,
        body: bytes,
        content_type: str,
        inference_id: str | None,
        variant: ProductionVariant | None = None,
    ) -> str:
        """Decode, predict, serialise and capture; runs in a worker thread."""
        variant = variant or self.primary
        classifier = variant.classifier
        image = decode_request_image(body, self.max_image_pixels, classifier.input_size)
        check_declared_format(image.format, content_type)
        try:
            [answer] = checked_answers(classifier.predict_images([image]), classifier.labels, 1)
        except ImageRejected as rejected:
            # The preprocessing refused what decoded (a colour mode it has no rule for):
            # the request's fault, not the model's.
            raise ContainerError(400, f"{rejected.code}: {rejected}") from None
        except ModelAnswerError as exc:
            # An answer the workflow refuses (NaN, logits, rows not summing to 1) is a 500:
            # a 200 would fail every image downstream as ModelResponseInvalid while the 5XX
            # alarm, which the canary's rollback watches, stayed at zero.
            LOGGER.error("the model's answer is not probabilities: %s", exc)
            raise ContainerError(500, f"the model's answer is not probabilities: {exc}") from None
        except Exception as exc:
            LOGGER.exception("the model failed on a %d-byte %s body", len(body), content_type)
            raise ContainerError(500, f"the model failed: {exc}") from exc
        text = json_text(answer)
        if variant.capture is not None:
            variant.capture.capture(
                input_body=body,
                input_content_type=content_type,
                output_body=text,
                output_content_type=RESPONSE_CONTENT_TYPE,
                inference_id=inference_id,
            )
        return text

    async def infer(
        self,
        request: Request,
        limit: int,
        variant: ProductionVariant | None = None,
        *,
        services_limit: bool = False,
    ) -> str:
        """Read the body, then predict in a worker thread once an inference slot is free.

        The body is read before a slot is taken, so slow uploads never hold one.
        Raises ``_BodyTimeout`` and ``ServerBusy`` for the routes to answer in their shape.
        """
        # Capture records the header as sent, like SageMaker's observedContentType (each
        # route has refused one sent twice: ``repeated_field_problem``).
        content_type = request.headers.get("content-type", "")
        _check_content_type(content_type, field_value(request.headers, "content-encoding"))
        _check_accept(field_value(request.headers, "accept"))
        with self.bodies.account() as account:
            try:
                body = await _read_body_within(request, limit, self.body_timeout_s, account)
            except _PayloadTooLarge as exc:
                if services_limit:
                    raise  # InvokeEndpoint's own limit: the runtime route answers for it
                raise ContainerError(
                    413, f"{exc.describe(limit)} (the server's --max-body-bytes)", close=True
                ) from None
            inference_id = request.headers.get("x-amzn-sagemaker-inference-id")
            async with self.slots.hold():
                # anyio does not abandon the thread on cancellation, so the slot is held
                # until the model has really finished.
                return await run_in_threadpool(
                    self.predict, body, content_type, inference_id, variant
                )

    async def inject(self, variant: ProductionVariant | None = None) -> Fault | None:
        for plan in (self.faults, variant.faults if variant is not None else None):
            if plan is None:
                continue
            injection = plan.next_injection()
            if injection.latency_ms:
                await asyncio.sleep(injection.latency_ms / 1000)
            if injection.fault is not None:
                return injection.fault
        return None

    # -- routes -------------------------------------------------------------------

    async def ping(self) -> JSONResponse:
        variants = self.variants()
        primary = variants[0].describe()
        return JSONResponse(
            {
                "status": "Healthy",
                "endpoint": self.endpoint_name,
                "variant": primary["name"],
                "model": primary["model"],
                "model_version": primary["model_version"],
                "labels": list(variants[0].classifier.labels),
                "variants": [v.describe() for v in variants],
            }
        )

    async def invocations(self, request: Request) -> Response:
        # Each answer here comes before the body is read: the connection closes after it.
        try:
            variant = self.choose(None)
        except ServiceError as exc:
            return container_error_response(ContainerError(503, exc.message, close=True))
        fault = await self.inject(variant)
        if fault is not None:
            status, message = _CONTAINER_FAULTS[fault]
            return container_error_response(ContainerError(status, message, close=True))
        try:
            if problem := repeated_field_problem(request.headers):
                raise ContainerError(400, problem, close=True)
            text = await self.infer(request, self.max_body_bytes, variant)
        except ContainerError as exc:
            return container_error_response(exc)
        except ServerBusy as exc:
            return container_error_response(ContainerError(429, str(exc), close=exc.close))
        except _BodyTimeout as exc:
            return container_error_response(ContainerError(408, str(exc), close=True))
        return Response(text, media_type=RESPONSE_CONTENT_TYPE, headers=variant.response_headers)

    async def invoke_endpoint(self, name: str, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            variant, text = await self._runtime_invoke(name, request)
        except ServiceError as exc:
            return runtime_error_response(exc, request_id)
        return Response(
            text,
            media_type=RESPONSE_CONTENT_TYPE,
            headers={
                "x-Amzn-Invoked-Production-Variant": variant.name,
                "x-amzn-RequestId": request_id,
                **variant.response_headers,
            },
        )

    async def _runtime_invoke(self, name: str, request: Request) -> tuple[ProductionVariant, str]:
        if name != self.endpoint_name:
            raise ServiceError(
                ServiceCode.VALIDATION_ERROR,
                f"Endpoint {name} not found. This server hosts endpoint {self.endpoint_name}.",
                close=True,
            )
        for problem in (
            repeated_field_problem(request.headers),
            invoke_header_problem(request.headers),
        ):
            if problem:
                raise ServiceError(ServiceCode.VALIDATION_ERROR, problem, close=True)
        if problem := target_model_problem(request.headers, name):
            raise ServiceError(
                ServiceCode.VALIDATION_ERROR,
                problem,
                {"ErrorCode": TARGET_MODEL_NOT_SUPPORTED},
                close=True,
            )
        if problem := target_container_problem(request.headers, name):
            raise ServiceError(ServiceCode.VALIDATION_ERROR, problem, close=True)
        try:
            variant = self.choose(request.headers.get("x-amzn-sagemaker-target-variant"))
        except ServiceError as exc:
            exc.close = True  # answered before the body is read
            raise
        try:
            text = await self._invoke_variant(variant, request)
        except ServiceError as exc:
            self._count(variant, exc)
            raise
        self._count(variant, None)
        return variant, text

    def _count(self, variant: ProductionVariant, error: ServiceError | None) -> None:
        """SageMaker's per-variant invocation metrics: a model's 5xx answer, an
        unavailable or failing endpoint count as 5XX; refused requests as 4XX."""
        status = 0
        if error is not None:
            status = int(error.extra.get("OriginalStatusCode", error.kind.status))
            if error.kind is ServiceCode.THROTTLING:
                status = 429
        with self._lock:
            variant.invocations += 1
            if status >= 500:
                variant.errors_5xx += 1
            elif status >= 400:
                variant.errors_4xx += 1

    async def _invoke_variant(self, variant: ProductionVariant, request: Request) -> str:
        fault = await self.inject(variant)
        if fault is not None:
            error = _runtime_fault(fault, self.endpoint_name)
            error.close = True  # answered before the body is read
            raise error
        # SageMaker itself refuses bodies over its payload limit, before the container:
        # by the declared length, or, for a body sent in chunks, once it passes the limit.
        declared = _declared_length(request)
        if declared is not None and declared > RUNTIME_MAX_PAYLOAD_BYTES:
            raise _over_invoke_endpoints_limit(f"{declared} bytes")
        try:
            # The service refuses first unless the container's own limit is smaller (at
            # the container's default the two are equal, and the service's is the answer).
            services = self.runtime_limit == RUNTIME_MAX_PAYLOAD_BYTES
            return await self.infer(request, self.runtime_limit, variant, services_limit=services)
        except _PayloadTooLarge:
            raise _over_invoke_endpoints_limit(
                f"more than {RUNTIME_MAX_PAYLOAD_BYTES} bytes"
            ) from None
        except ContainerError as exc:
            raise model_error(exc, self.endpoint_name) from None
        except ServerBusy as exc:
            # The container's 429, which SageMaker returns as every container error: a
            # ModelError with OriginalStatusCode 429 (its own throttling is another error).
            raise model_error(
                ContainerError(429, str(exc), close=exc.close), self.endpoint_name
            ) from None
        except _BodyTimeout as exc:
            raise ServiceError(ServiceCode.REQUEST_TIMEOUT, str(exc)) from None


def _over_invoke_endpoints_limit(amount: str) -> ServiceError:
    return ServiceError(
        ServiceCode.VALIDATION_ERROR,
        f"request body is {amount}; InvokeEndpoint accepts at most "
        f"{RUNTIME_MAX_PAYLOAD_BYTES} bytes",
        close=True,
    )


def _check_weight(weight: float) -> float:
    if not weight >= 0:
        raise ValueError(f"a variant weight must be >= 0, got {weight}")
    return float(weight)


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    """A client that hangs up mid-body is routine, not a server error: no traceback."""
    LOGGER.info(
        "client %s disconnected before sending the whole body of %s %s",
        f"{request.client.host}:{request.client.port}" if request.client else "?",
        request.method,
        request.url.path,
    )
    # uvicorn sends nothing to a disconnected client; the status only names the case.
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _routing_error(request: Request, exc: Exception) -> Response:
    """An unknown route or method, in the server's own error shape ``{"message": ...}``."""
    assert isinstance(exc, StarletteHTTPException)
    message = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return JSONResponse(
        {"message": f"{request.method} {request.url.path}: {message}"},
        status_code=exc.status_code,
        headers=exc.headers,
    )


class AmbiguousFramingGuard:
    """Refuse a request that carries both ``Transfer-Encoding`` and ``Content-Length``.

    The two can disagree about where the body ends, and a proxy in front may read it the
    other way (request smuggling): RFC 9112 6.1 lets the server refuse such a request
    and requires it to close the connection afterwards. A pure ASGI middleware, so it
    runs before any route reads a byte.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name.lower() for name, _ in scope["headers"]}
            if b"transfer-encoding" in names and b"content-length" in names:
                response = container_error_response(
                    ContainerError(
                        400,
                        "the request has both Transfer-Encoding and Content-Length; "
                        "send one of them",
                        close=True,
                    )
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _declared_length(request: Request) -> int | None:
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _runtime_fault(fault: Fault, endpoint_name: str) -> ServiceError:
    if fault is Fault.THROTTLE:
        return ServiceError(ServiceCode.THROTTLING, "Rate exceeded (injected fault)")
    if fault is Fault.UNAVAILABLE:
        return ServiceError(
            ServiceCode.SERVICE_UNAVAILABLE, "The service is unavailable (injected fault)"
        )
    if fault is Fault.INTERNAL_FAILURE:
        return ServiceError(
            ServiceCode.INTERNAL_FAILURE, "An internal failure occurred (injected fault)"
        )
    status, message = _CONTAINER_FAULTS[fault]  # the container's own answers
    return model_error(ContainerError(status, message), endpoint_name)


def create_app(
    classifier: Classifier,
    *,
    endpoint_name: str,
    max_body_bytes: int,
    max_image_pixels: int | None = None,
    variant_name: str = DEFAULT_VARIANT,
    capture: CaptureWriter | None = None,
    faults: FaultPlan | None = None,
    max_concurrency: int | None = None,
    queue_wait_s: float = DEFAULT_QUEUE_WAIT_S,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    max_buffered_bytes: int | None = None,
) -> FastAPI:
    """Build the server around a loaded model.

    The app owns ``capture``'s lifecycle: it starts the writer's flusher on
    startup and closes it (writing every buffered record) on shutdown.
    ``faults`` adds the ``/_faults`` admin route; without it the route does not exist.
    ``max_image_pixels`` defaults to the model's input area times
    ``PIXELS_PER_INPUT_PIXEL``, ``max_concurrency`` to the CPUs available and
    ``max_buffered_bytes`` (the bodies held at once) to ``BODIES_PER_SLOT`` of the largest
    body per inference slot.
    """
    if max_image_pixels is None:
        max_image_pixels = _model_pixel_limit(classifier)
    if max_body_bytes < 1 or max_image_pixels < 1:
        raise ValueError("max_body_bytes and max_image_pixels must be positive")
    if body_timeout_s <= 0:
        raise ValueError(f"body_timeout_s must be positive, got {body_timeout_s}")
    slots = InferenceSlots(
        available_cpus() if max_concurrency is None else max_concurrency, queue_wait_s
    )
    if max_buffered_bytes is None:
        max_buffered_bytes = max_body_bytes * slots.limit * BODIES_PER_SLOT
    endpoint = _Endpoint(
        classifier,
        endpoint_name=endpoint_name,
        variant_name=variant_name,
        max_body_bytes=max_body_bytes,
        max_image_pixels=max_image_pixels,
        slots=slots,
        bodies=BodyBudget(max_buffered_bytes),
        body_timeout_s=body_timeout_s,
        capture=capture,
        faults=faults,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if capture is not None:
            capture.start()
        try:
            yield
        finally:
            for variant in endpoint.variants():
                if variant.capture is not None:
                    await run_in_threadpool(variant.capture.close)

    app = FastAPI(
        title="scones model server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.router.redirect_slashes = False  # /invocations/ is not found, never a 307
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(StarletteHTTPException, _routing_error)
    app.add_middleware(AmbiguousFramingGuard)
    app.state.endpoint = endpoint
    app.state.capture = capture
    app.state.faults = faults
    app.add_api_route("/ping", endpoint.ping, methods=["GET", "HEAD"])
    app.add_api_route("/invocations", endpoint.invocations, methods=["POST"])
    app.add_api_route("/endpoints/{name}/invocations", endpoint.invoke_endpoint, methods=["POST"])
    if faults is not None:
        _add_fault_routes(app, faults)
    return app


def _model_pixel_limit(classifier: Classifier) -> int:
    return default_max_image_pixels(classifier.input_size)


def _fault_route_refusal(request: Request) -> JSONResponse | None:
    """Why ``/_faults`` refuses this request, or None. A web page the tester opens can
    send a "simple" cross-site POST (``text/plain``, no preflight) to 127.0.0.1, and a
    rebinding page can send anything under its own name: a fault plan must come as
    ``application/json`` (which a cross-site page cannot send without a preflight this
    server never grants) to a loopback ``Host``."""
    host = request.headers.get("host", "")
    if not is_loopback_host(host):
        return JSONResponse(
            {
                "message": f"host {host!r} is not served: the fault route answers only "
                "localhost or a loopback address (127.0.0.1, [::1])"
            },
            status_code=403,
        )
    media_type = _media_type(request.headers.get("content-type"))
    if request.method == "POST" and media_type != "application/json":
        example = '{"throttle": 2}'
        return JSONResponse(
            {"message": f"send the fault plan as Content-Type: application/json, e.g. {example}"},
            status_code=415,
        )
    return None


def _add_fault_routes(app: FastAPI, faults: FaultPlan) -> None:
    async def show_faults(request: Request) -> JSONResponse:
        return _fault_route_refusal(request) or JSONResponse(faults.snapshot())

    async def arm_faults(request: Request) -> JSONResponse:
        refusal = _fault_route_refusal(request)
        if refusal is not None:
            return refusal
        try:
            spec: Any = await request.json()
        except ValueError:
            return JSONResponse(
                {"message": 'fault plan must be JSON, for example {"throttle": 2}'},
                status_code=400,
            )
        try:
            return JSONResponse(faults.arm(spec))
        except FaultSpecError as exc:
            return JSONResponse({"message": str(exc)}, status_code=400)

    async def clear_faults(request: Request) -> JSONResponse:
        return _fault_route_refusal(request) or JSONResponse(faults.clear())

    app.add_api_route("/_faults", show_faults, methods=["GET"])
    app.add_api_route("/_faults", arm_faults, methods=["POST"])
    app.add_api_route("/_faults", clear_faults, methods=["DELETE"])
