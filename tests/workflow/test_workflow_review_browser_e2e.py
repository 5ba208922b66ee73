"""`scones review` in a real browser against the offline stack.

Images go through the whole workflow and end NEEDS_REVIEW (one confident image is
ACCEPTED and drawn for review with a sample share of 1). Headless Chromium (Debian's
package, driven by Playwright) opens the page the CLI serves, checks that every
image (a PNG the review server reads from the stack's bucket and draws) really loads,
and answers with the keyboard only. Then the records, the labelled copies and the
manifest are checked.
The browser is required: without it this test fails, it does not skip.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from workflow_helpers import confident_image

from scones.cli.review import build_review, clients_for
from scones.offline.client import offline_session
from scones.offline.stack import OfflineStack
from scones.serving.server import ModelServer
from scones.template_params import PROJECT_ROOT
from tests.chromium import CHROMIUM_FLAGS, chromium_binary

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow-stack")]

# The README's screenshot is refreshed only when asked (SCONES_SCREENSHOTS=1), so a test
# run never changes a tracked file.
SCREENSHOT = PROJECT_ROOT / "docs" / "images" / "review-page.png"


def uncertain_images(
    predictions: dict[Path, tuple[str, float]], threshold: float, count: int
) -> list[Path]:
    below = sorted(
        (p for p, (_, confidence) in predictions.items() if confidence < threshold),
        key=lambda p: predictions[p][1],
    )
    assert len(below) >= count, "too few sample images are below the threshold"
    return below[:count]


def test_review_page_in_chromium_answers_with_the_keyboard(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium_binary()
    api = stack.api()
    uncertain = uncertain_images(local_predictions, threshold, 3)
    confident = confident_image(local_predictions, threshold)
    # The first key turns its text around (U+202E): the page must show it as written.
    turned = ["invoice\u202egnp-", "", ""]
    uploads = [
        api.upload_file(path, f"review/{i}-{turned[i]}{path.name}")
        for i, path in enumerate(uncertain)
    ]
    uploads.append(api.upload_file(confident, f"review/3-{confident.name}"))
    records = api.wait_for_records(uploads, timeout=120)
    assert [records[u]["status"] for u in uploads] == ["NEEDS_REVIEW"] * 3 + ["ACCEPTED"]

    # What `scones review --sample-accepted 1` builds on the running offline stack.
    endpoints = stack.endpoints
    clients = clients_for(offline_session(endpoints.region), endpoints.endpoint_url)
    target, app = build_review(
        clients,
        stack_name=None,
        bucket=endpoints.bucket,
        reviewer="browser-test",
        sample_share=1.0,
        sample_days=1.0,
        # The page takes the API's token from the URL `scones review` prints.
        token="a-review-token",
    )
    assert target.table_name == endpoints.table
    prefix = target.parameters["LabelledDataPrefix"]
    server = ModelServer(app, host="127.0.0.1", port=0)
    url = server.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_FLAGS[1:]
            )
            try:
                unseen_answer_is_refused(browser, url, "a-review-token")
                order = review_in_browser(browser, url, "a-review-token")
            finally:
                browser.close()
    finally:
        server.stop()

    by_id = {records[u]["pk"]: u for u in uploads}
    assert sorted(order) == sorted(by_id), "the page listed other images than the uploads"
    expected = dict(zip(order, ["bicycle", "motorcycle", "neither", "bicycle"], strict=True))
    final = {r["pk"]: r for r in api.records() if r["pk"] in by_id}
    for record_id, answer in expected.items():
        record = final[record_id]
        assert record["status"] == "REVIEWED", record
        assert record["review_label"] == answer
        assert record["reviewer"] == "browser-test"
        assert record["classified_status"] == records[by_id[record_id]]["status"]
    sampled = records[uploads[-1]]["pk"]
    assert final[sampled]["review_sampled"] is True

    s3 = clients.s3
    listed = s3.list_objects_v2(Bucket=endpoints.bucket, Prefix=prefix).get("Contents", [])
    keys = {o["Key"] for o in listed}
    manifests = {k for k in keys if k.startswith(f"{prefix}manifest-")}
    copies = keys - manifests
    # One manifest per day the uploads were recorded on.
    days = {final[r]["recorded_at"][:10] for r in expected}
    assert manifests == {f"{prefix}manifest-{day}.jsonl" for day in days}
    assert copies == {final[r]["labelled_key"] for r, a in expected.items() if a != "neither"}
    for record_id, answer in expected.items():
        if answer == "neither":
            assert "labelled_key" not in final[record_id]
            continue
        key = final[record_id]["labelled_key"]
        assert key.startswith(f"{prefix}{answer}/")
        original = by_id[record_id].source
        body = s3.get_object(Bucket=endpoints.bucket, Key=key)["Body"].read()
        assert body == Path(original).read_bytes()
    manifest = [
        json.loads(line)
        for key in sorted(manifests)
        for line in s3.get_object(Bucket=endpoints.bucket, Key=key)["Body"].read().splitlines()
    ]
    assert {m["record_id"]: m["label"] for m in manifest} == expected
    for line in manifest:
        answer = line["label"]
        assert line["path"] == (
            None if answer == "neither" else final[line["record_id"]]["labelled_key"][len(prefix) :]
        )


def unseen_answer_is_refused(browser: Any, url: str, token: str) -> None:
    """An image that does not load (deleted, expired, refused) cannot be answered: the
    buttons are disabled, the key press is refused, nothing is saved, and the page shows
    the server's reason. Here every image is answered 410. Each is asked for once, and its
    reason once: moving through the queue asks again for none."""
    page = browser.new_page(viewport={"width": 1100, "height": 640})
    asked: list[str] = []
    held: list[Any] = []

    def gone(route: Any) -> None:
        # The first is answered at once and the rest a while later, as an uneven server
        # would: the first image then fails while its queue row still waits to ask for it,
        # which is when a page could ask for one image twice.
        asked.append(route.request.url)
        held.append(route)
        if len(asked) == 1:
            answer_held()

    def answer_held() -> None:
        body = '{"detail": "the upload was deleted (a test)"}'
        while held:
            held.pop(0).fulfill(status=410, content_type="application/json", body=body)

    try:
        page.route(lambda address: "/api/image?" in address, gone)
        page.goto(f"{url}/?token={token}")
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        reason = page.locator("#status.error:has-text('the upload was deleted (a test)')")
        for _ in range(200):
            page.wait_for_timeout(150)
            answer_held()
            if reason.count():
                break
        assert "could not be loaded" in reason.inner_text()
        assert page.locator(".answers button:disabled").count() == 3
        page.keyboard.press("b")
        page.wait_for_timeout(300)
        assert "could not be loaded" in page.locator("#status").inner_text()
        assert page.locator("#progress").inner_text() == "0 of 4 answered"
        for _ in range(200):  # every row fails and is asked its reason
            page.wait_for_timeout(150)
            answer_held()
            if len(asked) >= 2 * 4:
                break
        page.wait_for_timeout(500)  # room for a request too many
        answer_held()
        before = len(asked)
        for key in ["ArrowDown", "ArrowDown", "ArrowUp", "ArrowDown"]:
            page.keyboard.press(key)
            page.wait_for_timeout(150)
            answer_held()
        assert len(asked) == before, asked
        per_image = Counter(address.split("&token=")[0] for address in asked)
        assert len(per_image) == 4 and set(per_image.values()) == {2}, per_image
    finally:
        page.close()


def review_in_browser(browser: Any, url: str, token: str) -> list[str]:
    """Answer the queue with the keyboard; return the record ids in the page's order."""
    page = browser.new_page(viewport={"width": 1100, "height": 640})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Images are asked for two at a time, so connections stay free for the answers.
    flight = {"now": 0, "most": 0, "asked": 0}

    def image_request(request: Any, step: int) -> None:
        if "/api/image?" in request.url:
            flight["now"] += step
            flight["most"] = max(flight["most"], flight["now"])
            flight["asked"] += step > 0

    page.on("request", lambda r: image_request(r, 1))
    page.on("requestfinished", lambda r: image_request(r, -1))
    page.on("requestfailed", lambda r: image_request(r, -1))
    page.goto(url + "/")  # without the token: the page says where to open it from
    page.wait_for_selector("#status.error:has-text('the URL')", timeout=30_000)
    page.goto(f"{url}/?token={token}")
    page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
    # Waits are arrow functions: Playwright evaluates a bare expression again on every
    # poll, with eval, which the page's Content-Security-Policy refuses.
    page.wait_for_function(
        "() => document.images.length >= 5 && "
        "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000,
    )
    # Each image comes from the review server (its token in the URL), as a PNG.
    source = page.evaluate("document.querySelector('#detail img').src")
    assert source.startswith(f"{url}/api/image?record_id=") and f"&token={token}" in source
    served = page.request.get(source)
    assert served.ok and served.headers["content-type"] == "image/png"
    assert served.body().startswith(b"\x89PNG")
    assert page.evaluate("document.querySelector('#detail img').naturalWidth") == 32
    items = page.locator("#queue li")
    order = [items.nth(i).get_attribute("data-record-id") or "" for i in range(items.count())]
    assert len(order) == 4
    assert flight["asked"] >= 4 and flight["most"] <= 2, flight
    # A key's characters that reorder or hide text are shown as escapes, never obeyed.
    shown = page.inner_text("#queue") + page.inner_text("#detail")
    assert "\u202e" not in shown and "invoice\\u202egnp-" in shown

    def answered(index: int) -> None:
        page.wait_for_selector(
            f"#queue li[data-record-id='{order[index]}'][data-state='done']", timeout=30_000
        )
        # The page moved on: the image in view is drawn, not an empty frame.
        page.wait_for_function(
            "() => document.querySelector('#current-image').naturalWidth > 0", timeout=30_000
        )

    # A held key's repeats answer nothing: one press is one answer.
    page.evaluate(
        "for (let i = 0; i < 5; i++) document.dispatchEvent("
        "new KeyboardEvent('keydown', {key: 'b', repeat: true, bubbles: true}))"
    )
    assert page.locator("#status").inner_text() == ""
    assert page.locator("#progress").inner_text() == "0 of 4 answered"
    # b answers the first; the page moves to the next open one.
    page.keyboard.press("b")
    answered(0)
    shot = page.screenshot()
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
    if os.environ.get("SCONES_SCREENSHOTS") == "1":
        SCREENSHOT.write_bytes(shot)
    page.keyboard.press("ArrowDown")  # skip the second for now
    page.keyboard.press("n")
    answered(2)
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")  # back to the second
    page.keyboard.press("m")
    answered(1)
    page.keyboard.press("b")  # the page moved on to the last open one
    answered(3)
    assert page.locator("#progress").inner_text() == "4 of 4 answered"
    # Each image was drawn once: the row and the detail share it, and moving through the
    # queue asks for none again (no-store keeps it out of the disk cache, not the page).
    assert flight["asked"] == 4, flight
    assert errors == []
    return order
