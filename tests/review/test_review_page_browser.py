"""The review page in a real browser under its Content-Security-Policy.

The review app (over moto, served by uvicorn on loopback as `scones review` serves it)
is opened from its URL, with the API's token, in headless Chromium (Debian's package,
driven by Playwright). Keys and labels an uploader could control are hostile markup.
The page must load, draw its images and take an answer with no policy violation at
all, show the hostile text as text, and refuse to run script that got into the page
anyway (an inline script, an inline handler, an inline style) or that its own script
could write (markup or script from text: Trusted Types).
The browser is required: without it this test fails, it does not skip.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from scones.review.app import LOOPBACK_HOSTS
from scones.serving.server import ModelServer
from tests.chromium import CHROMIUM_FLAGS, chromium_binary
from tests.review import test_review_domain as domain
from tests.review.test_review_domain import TOKEN, Env, app_for, service

pytestmark = pytest.mark.slow

env = domain.env  # the review tests' fixture: moto with a bucket and a results table

# Markup in a key and a label: shown as text, it runs nothing and adds no element.
HOSTILE_KEY = "<img src=x onerror=\"window.pwned='key'\">'\"</dd><script>pwned=1</script>.png"
HOSTILE_LABEL = "<b onmouseover=\"window.pwned='label'\">bicycle</b>"
# What the page records: every violation its policy reports, and the console's lines.
WATCH = """
window.violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.violations.push(e.effectiveDirective + " " + e.blockedURI);
});
"""
# Markup that reached the page (as a bug in it might let through): none of it may run.
INJECTED = (
    "<script>window.pwned = 'inline script'</script>"
    "<img id=injected-img src=nothing-such onerror=\"window.pwned = 'inline handler'\">"
    "<p id=injected-style style='display: none'>styled</p>"
)

# What a bug in the page's own script could do with an uploader's text: each markup or
# script sink, tried in the live document. Each must throw (Trusted Types), none run.
MARKUP_SINKS = """() => {
  const tried = {};
  const attempt = (name, write) => {
    try { write(); tried[name] = "written"; } catch (e) { tried[name] = e.name; }
  };
  const markup = '<img src=gone onerror="window.pwned = 1">';
  attempt("insertAdjacentHTML", () => document.body.insertAdjacentHTML("beforeend", markup));
  attempt("innerHTML", () => { document.getElementById("detail").innerHTML = markup; });
  attempt("handler attribute", () => {
    const img = document.createElement("img");
    img.setAttribute("onerror", "window.pwned = 2");
    img.src = "gone";
    document.body.append(img);
  });
  attempt("script text", () => {
    const script = document.createElement("script");
    script.textContent = "window.pwned = 3";
    document.body.append(script);
  });
  return tried;
}"""


@pytest.fixture
def served(env: Env) -> Any:
    """The review app on a loopback port, with the environment's records: its page's URL
    as `scones review` prints it (with the API's token)."""
    server = ModelServer(
        app_for(service(env), LOOPBACK_HOSTS, reviewer="csp-test"), host="127.0.0.1", port=0
    )
    url = server.start()
    try:
        yield f"{url}/?token={TOKEN}"
    finally:
        server.stop()


@pytest.fixture
def browser() -> Any:
    from playwright.sync_api import sync_playwright

    executable = chromium_binary()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS[1:])
        try:
            yield launched
        finally:
            launched.close()


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A page that records its policy violations and its console's errors and warnings
    (but the browser's own ask for /favicon.ico, which the app does not serve)."""
    page = browser.new_page(viewport={"width": 1100, "height": 640})
    console: list[str] = []

    def heard(message: Any) -> None:
        if message.type in ("error", "warning") and not message.location.get("url", "").endswith(
            "/favicon.ico"
        ):
            console.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", heard)
    page.on("pageerror", lambda exc: console.append(f"page error: {exc}"))
    page.add_init_script(WATCH)
    page.goto(url)
    page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
    return page, console


def test_the_page_works_under_its_policy_and_shows_hostile_text_as_text(
    env: Env, served: str, browser: Any
) -> None:
    hostile = env.record(
        "NEEDS_REVIEW", age=timedelta(hours=2), suffix=HOSTILE_KEY, label=HOSTILE_LABEL
    )
    other = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    page, console = open_page(browser, served)
    try:
        # An arrow function: Playwright evaluates a bare expression again on every poll,
        # with eval, which the policy refuses (and reports).
        page.wait_for_function(
            "() => document.images.length === 3 && "
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
            timeout=30_000,
        )
        # The style sheet applied: the detail's image is drawn at its styled size.
        box = page.locator("#current-image").bounding_box()
        assert box is not None and round(box["width"]) == 256
        shown = page.inner_text("#detail") + page.inner_text("#queue")
        assert HOSTILE_KEY in shown and HOSTILE_LABEL in shown
        assert page.locator("script").count() == 1  # the page's own file, nothing added
        assert page.locator("#queue b").count() == 2  # each row's name, no label's <b>
        page.hover("#queue li:first-child")  # where the label's handler would fire
        page.locator("#detail").hover()
        page.click(".answers button[data-answer='motorcycle']")
        page.wait_for_selector("#queue li:first-child[data-state='done']", timeout=30_000)
        assert page.evaluate("window.pwned") is None
        assert page.evaluate("window.violations") == []
        assert console == []
    finally:
        page.close()
    record = env.get(hostile)
    assert (record["status"], record["review_label"], record["reviewer"]) == (
        "REVIEWED",
        "motorcycle",
        "csp-test",
    )
    assert env.get(other)["status"] == "NEEDS_REVIEW"


def test_script_that_got_into_the_page_does_not_run(env: Env, served: str, browser: Any) -> None:
    """Markup injected into the served page (its own headers kept) runs no inline script,
    handler or style, and the live document's markup and script sinks refuse text: the
    policy refuses each, and reports it."""
    env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    page = browser.new_page()

    def inject(route: Any) -> None:
        response = route.fetch()
        body = response.text().replace("</main>", "</main>" + INJECTED)
        route.fulfill(response=response, body=body)

    page.route(served, inject)
    page.add_init_script(WATCH)
    try:
        page.goto(served)
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        assert page.evaluate("window.pwned") is None  # an inline script runs as it is parsed
        tried = page.evaluate(MARKUP_SINKS)
        assert tried == dict.fromkeys(tried, "TypeError") and len(tried) == 4, tried
        page.wait_for_function("() => window.violations.length >= 7", timeout=30_000)
        assert page.evaluate("window.pwned") is None
        assert page.locator("#injected-style").is_visible()
        directives = sorted(v.split()[0] for v in page.evaluate("window.violations"))
        assert directives == [
            *["require-trusted-types-for"] * 4,  # the four sinks
            "script-src-attr",  # the served markup's handler
            "script-src-elem",  # its script
            "style-src-attr",  # its style attribute
        ], directives
        # The page's own script still ran: the queue is listed.
        assert page.locator("#queue li").count() == 1
    finally:
        page.close()


def test_the_page_names_a_record_not_as_the_stack_writes_it_and_shows_the_rest(
    env: Env, served: str, browser: Any
) -> None:
    good = env.record("NEEDS_REVIEW", age=timedelta(hours=2))
    foreign = env.record("NEEDS_REVIEW", age=timedelta(hours=1), confidence="high")
    page, console = open_page(browser, served)
    try:
        assert page.locator("#queue li").count() == 1
        assert good.rsplit("/", 1)[-1].split("#")[0] in page.inner_text("#queue")
        progress = page.inner_text("#progress")
        assert "1 unreadable record(s) left out" in progress
        assert f"{foreign} (confidence is a string, not a number)" in progress
        assert console == []
    finally:
        page.close()


def test_the_page_says_when_more_images_wait_than_it_shows(env: Env, browser: Any) -> None:
    for minutes in (30, 20):
        env.record("NEEDS_REVIEW", age=timedelta(minutes=minutes))
    server = ModelServer(
        app_for(service(env), LOOPBACK_HOSTS, queue_limit=1), host="127.0.0.1", port=0
    )
    url = server.start()
    page, console = open_page(browser, f"{url}/?token={TOKEN}")
    try:
        assert page.locator("#queue li").count() == 1
        assert page.inner_text("#progress") == (
            "0 of 1 answered \u00b7 more images wait than this page shows: answer these, then "
            "reload for the next ones"
        )
        assert console == []
    finally:
        page.close()
        server.stop()
