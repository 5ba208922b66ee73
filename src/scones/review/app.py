"""The review web app: the page, ``GET /api/queue``, ``GET /api/image`` and ``POST /api/answers``.

It is meant for one reviewer on their own machine (it listens on loopback by
default). Every API request must carry the secret token of the printed URL (loopback is
shared by every user of the machine), requests must name an allowed host (no DNS
rebinding), an answer must be JSON from the page's own origin (no cross-site form
posts), and the API refuses what a browser marks as a cross-site request (another
site's ``<img src>`` cannot make the queue sample records). Every answer carries
``SECURITY_HEADERS``: the page runs only the script and style sheet the server sends,
shows only its own images, and cannot be framed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from weakref import WeakKeyDictionary

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError
from scones_core.errors import ImageRejected, ObjectChanged, ObjectNotFound
from scones_core.records import (
    PARTITION_KEY,
    REVIEW_LABEL_ATTRIBUTE,
    STATUS_ATTRIBUTE,
    UnreadableRecord,
)
from scones_core.review import (
    EXPIRED_COUNT_CAP,
    ImageNotShown,
    ReviewConflict,
    ReviewError,
    ReviewIncomplete,
    ReviewService,
)
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scones.review.page import PAGE, SCRIPT, SCRIPT_URL, STYLE, STYLE_URL
from scones.shown_text import shown

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
TOKEN_HEADER = "X-Review-Token"  # noqa: S105 (a header name)
# An answer is a few hundred bytes of JSON; nothing larger is read, nor waited for longer.
MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 10.0
# What the page may load and do: its own script, style sheet and images, requests to its
# own API, and nothing else. No inline script, style or handler runs (text an uploader
# controls can never become one), the script's markup and script sinks (innerHTML, a
# handler attribute) refuse plain text (Trusted Types, with no policy to make it), nothing
# may reset the page's base URL or send a form elsewhere, and no other site may frame it
# (a hidden frame could take its clicks).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
# On every answer, the page's, its files' and the API's (refusals included): never
# cached (a customer's photo stays out of the reviewer's disk cache, a new version's
# page never runs an old script), never sniffed into another type, never framed, no
# Referer (the printed URL carries the API's token), and nothing another site may embed
# or keep a window handle on.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
IMAGE_PATH = "/api/image"
# Images decoded at once: each can take a few hundred MB for a large upload (MaxImagePixels), and
# a browser asks for six at a time.
DECODE_SLOTS = 2
# How often a request waiting to be drawn checks that its browser is still there.
_DISCONNECT_POLL_S = 0.25

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewAppSettings:
    reviewer: str
    table_label: str  # shown in the page's header
    # The API wants this secret (from the printed URL) in every request's X-Review-Token
    # header, on loopback too: the Host and origin checks keep other sites' pages out of
    # a browser, not another user of the machine (or of the network) and their clients.
    token: str
    queue_limit: int = 200
    allowed_hosts: frozenset[str] = LOOPBACK_HOSTS

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("the review API needs a token")


class Answer(BaseModel):
    record_id: str = Field(min_length=1, max_length=2048)  # DynamoDB's key limit
    expected_status: str = Field(max_length=32)
    answer: str = Field(max_length=256)


class SameOriginOnly:
    """Refuses what the page would never send (another host, origin or site, a body
    without a length or too large, an API call without the token) and puts
    ``SECURITY_HEADERS`` on every answer.

    Plain ASGI, not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` hides
    a client's disconnect from the routes, and the image route must see it.
    """

    def __init__(self, app: ASGIApp, settings: ReviewAppSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        request = Request(scope)  # its headers and query only: the body is the route's
        refusal = self.refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send_marked)
            return
        await self.app(scope, receive, send_marked)

    def refusal(self, request: Request) -> JSONResponse | None:
        settings = self.settings
        host = request.headers.get("host", "")
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if hostname.lower() not in settings.allowed_hosts:  # names know no case
            return JSONResponse({"detail": f"host {host!r} is not served"}, status_code=400)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1] != host:
                return JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
        if request.method == "POST":  # the one method with a body; others are 405 below
            # Refused before a byte of the body is read, so the connection closes after
            # the answer: what is left of the body must not be read as the next request.
            if "transfer-encoding" in request.headers:
                # With both headers the chunks decide where the body ends (RFC 9112 6.1),
                # so the Content-Length checked below would bound nothing.
                return _closing(400, "a Transfer-Encoding is not accepted; send a Content-Length")
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return _closing(411, "a Content-Length is required")
            if int(length) > MAX_BODY_BYTES:
                return _closing(413, f"the body is over {MAX_BODY_BYTES} bytes")
        api = request.url.path.startswith("/api/")
        if api and request.headers.get("sec-fetch-site") == "cross-site":
            return JSONResponse({"detail": "cross-site request refused"}, status_code=403)
        if api:
            given = request.headers.get(TOKEN_HEADER, "")
            if not given and request.url.path == IMAGE_PATH:
                # An <img> sends no headers of its own: the page puts the token in its URL.
                given = request.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), settings.token.encode()):
                return JSONResponse(
                    {"detail": "open the page from the URL `scones review` printed (its token)"},
                    status_code=401,
                )
        return None


def _problem(error: Any) -> str:
    """One validation error as ``field: what is wrong`` (just what is wrong for the body)."""
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    what = str(error.get("msg", "invalid"))
    return f"{where}: {what}" if where else what


def _closing(status: int, detail: str) -> JSONResponse:
    """A refusal of a request whose body was not read: the connection ends with it."""
    return JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})


def build_app(service: ReviewService, settings: ReviewAppSettings) -> FastAPI:
    app = FastAPI(title="Scones Unlimited review", docs_url=None, redoc_url=None, openapi_url=None)

    app.add_middleware(SameOriginOnly, settings=settings)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input back, which fails on text JSON allows
        # but UTF-8 does not (a lone surrogate): name the fields, not their values.
        problems = "; ".join(map(_problem, exc.errors()))
        what = "names no image" if request.url.path == IMAGE_PATH else "is not an answer"
        return JSONResponse({"detail": f"the request {what}: {problems}"}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # A reason may quote the upload's key: the page shows it as the queue does.
        detail = shown(exc.detail) if isinstance(exc.detail, str) else exc.detail
        return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    # The page's script and style sheet: files of their own, so the policy can refuse
    # every inline one.
    @app.get(f"/{SCRIPT_URL}")
    def script() -> Response:
        return Response(SCRIPT, media_type="text/javascript; charset=utf-8")

    @app.get(f"/{STYLE_URL}")
    def style() -> Response:
        return Response(STYLE, media_type="text/css; charset=utf-8")

    @app.get("/api/queue")
    async def queue() -> dict[str, Any]:
        try:
            return await asyncio.to_thread(_queue, service, settings)
        except Exception as exc:  # AWS refused or failed: the page shows why
            raise HTTPException(
                status_code=502, detail=f"the queue could not be read: {exc}"
            ) from exc

    add_image_route(app, service)

    @app.post("/api/answers")
    async def answer(request: Request) -> dict[str, Any]:
        body = await _answer_of(request)
        try:
            result = await asyncio.to_thread(
                service.answer,
                body.record_id,
                expected_status=body.expected_status,
                answer=body.answer,
                reviewer=settings.reviewer,
            )
        except ReviewConflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        except ReviewError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        except ReviewIncomplete as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from exc
        except Exception as exc:  # AWS refused or failed: the page shows why; a retry completes
            raise HTTPException(
                status_code=502, detail=f"the answer could not be saved: {exc}"
            ) from exc
        return {
            "record_id": body.record_id,
            "status": result.record.get(STATUS_ATTRIBUTE),
            "review_label": result.record.get(REVIEW_LABEL_ATTRIBUTE),
            "labelled_key": result.labelled_key,
            "manifest_key": result.manifest_key,
        }

    return app


async def _answer_of(request: Request) -> Answer:
    """The request's answer. Its body (a few hundred bytes) must arrive within
    ``BODY_TIMEOUT_S``: a sender that stops midway no longer holds its connection open.
    A body that is not a JSON object in UTF-8 is named for what it is."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise HTTPException(415, f"send the answer as application/json, not {media or 'no type'!r}")
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await request.body()
    except TimeoutError:
        raise HTTPException(
            408,
            f"the answer's body did not arrive within {BODY_TIMEOUT_S:g} s",
            headers={"Connection": "close"},
        ) from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"the answer is not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise HTTPException(400, "the answer is not an answer: it nests too deep") from None
    except ValueError as exc:  # not JSON, or a number too long for Python to read
        raise HTTPException(400, f"the answer is not JSON: {exc}") from None
    try:
        return Answer.model_validate(document)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def add_image_route(app: FastAPI, service: ReviewService) -> None:
    """``GET /api/image?record_id=``: the record's image as a PNG the server drew.

    At most ``DECODE_SLOTS`` images are read and drawn at once (each holds its upload,
    up to MaxImageBytes, and a decode of up to MaxImagePixels); the drawing runs in
    threads of its own, so images never hold up the queue or an answer. A request whose
    browser has gone (the reviewer moved on) is dropped while it waits for a slot.
    """
    drawing = ThreadPoolExecutor(max_workers=DECODE_SLOTS, thread_name_prefix="review-image")
    # One gate per event loop (a test client may run the app on several in turn).
    gates: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()

    async def slot(request: Request) -> asyncio.Semaphore | None:
        """The gate, acquired; None once the browser has gone while it waited."""
        gate = gates.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(DECODE_SLOTS))
        acquiring = asyncio.ensure_future(gate.acquire())
        while not (await asyncio.wait({acquiring}, timeout=_DISCONNECT_POLL_S))[0]:
            if await request.is_disconnected():
                acquiring.cancel()  # a waiter woken at the same moment hands its slot on
                with contextlib.suppress(asyncio.CancelledError):
                    if await acquiring:  # acquired before the cancel took effect
                        gate.release()
                return None
        return gate

    @app.get(IMAGE_PATH)
    async def image(
        request: Request, record_id: str = Query(min_length=1, max_length=2048)
    ) -> Response:
        gate = await slot(request)
        if gate is None:
            return Response(status_code=503, headers={"Connection": "close"})
        try:
            data = await asyncio.to_thread(service.read_for_display, record_id)
            png = await asyncio.get_running_loop().run_in_executor(
                drawing, service.draw_for_display, data
            )
        except ImageNotShown as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        except (ObjectNotFound, ObjectChanged) as exc:  # deleted, expired, overwritten
            raise HTTPException(status_code=410, detail=str(exc)) from exc
        except ImageRejected as exc:
            detail = f"the image cannot be shown: {exc.code}: {exc}"
            raise HTTPException(status_code=422, detail=detail) from exc
        except MemoryError as exc:
            raise HTTPException(
                status_code=503, detail="not enough memory to draw the image now; try again"
            ) from exc
        except Exception as exc:  # S3 or DynamoDB refused or failed: logged, not echoed
            logger.warning("image of %r not served: %s", record_id, exc, exc_info=True)
            raise HTTPException(
                status_code=502,
                detail=f"the image could not be read ({type(exc).__name__}); "
                "the review server's log says why",
            ) from exc
        finally:
            gate.release()
        # no-store, as every answer (SECURITY_HEADERS): a customer's photo stays out of the
        # reviewer's disk cache, where it would outlive the upload's deletion. The page asks
        # for each image once; the browser reuses it within the page whatever the header says.
        return Response(png, media_type="image/png")


def _queue(service: ReviewService, settings: ReviewAppSettings) -> dict[str, Any]:
    # Drawing accepted records for review adds to the queue; a refused draw (throttled,
    # a role without the grant) must not keep people from what is already waiting. The
    # next load of the queue draws again.
    sampling_error = None
    try:
        sampled = service.sample_accepted()
    except (ClientError, BotoCoreError) as exc:
        logger.warning("accepted records could not be sampled for review: %s", exc)
        sampled, sampling_error = 0, f"accepted records could not be sampled for review: {exc}"
    queue = service.queue(limit=settings.queue_limit)
    return {
        "reviewer": settings.reviewer,
        "table": settings.table_label,
        "answers": list(service.settings.answers),
        "newly_sampled": sampled,
        "sampling_error": sampling_error,
        # Waiting for review, but recorded before UploadRetentionDays: no image any more
        # (counted up to expired_cap).
        "expired": service.expired_waiting(),
        "expired_cap": EXPIRED_COUNT_CAP,
        # The key as the page shows it: characters that reorder or hide text as escapes.
        "items": [
            {**item.to_json(), "shown_key": shown(item.key), "image_url": image_url(item.record_id)}
            for item in queue.items
        ],
        # Records of the queue not as the stack writes them: left out, each named (its
        # key, and the problems that may quote it, as the page shows keys).
        "unreadable": [_shown_unreadable(bad) for bad in queue.unreadable],
        # More wait than the page shows (the first queue_limit of each kind).
        "more": queue.more,
    }


def _shown_unreadable(bad: UnreadableRecord) -> dict[str, Any]:
    return {
        **bad.to_json(),
        PARTITION_KEY: shown(bad.record_id),
        "problems": [shown(problem) for problem in bad.problems],
    }


def image_url(record_id: str) -> str:
    """The page's address of a record's image (relative, as the page's own requests)."""
    return IMAGE_PATH.lstrip("/") + "?record_id=" + quote(record_id, safe="")
