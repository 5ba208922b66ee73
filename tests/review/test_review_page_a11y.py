"""The review page for a person working by keyboard, with a screen reader, zoomed in.

The review app (over moto, on loopback) in headless Chromium, as in
``test_review_page_browser``: a record is answered with Tab, Enter and the answer keys
alone, every control shows where the focus is, the answer buttons carry their answer as
their name, status changes reach the live region, the text keeps its contrast in every
state a row or a message can be in, and a narrow (zoomed) window needs no sideways
scrolling. The browser is required: without it these tests fail, they do not skip.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.review import test_review_domain as domain
from tests.review import test_review_page_browser as browser_tests
from tests.review.test_review_domain import BUCKET, Env, service

pytestmark = pytest.mark.slow

env = domain.env
served = browser_tests.served
browser = browser_tests.browser
open_page = browser_tests.open_page

# The focused element, as a test names it, and whether its focus indicator shows: a
# drawn outline (or box shadow) of some width.
FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  return {
    tag: el.tagName.toLowerCase(),
    focus: el.dataset.focus || el.id || "",
    outline: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0,
    shadow: style.boxShadow !== "none",
    current: el.getAttribute("aria-current"),
  };
}"""

# Every piece of visible text on the page and its contrast with what is drawn behind it,
# from the computed style: the colours of the element and its ancestors, with each one's
# opacity, composited over the white canvas (nothing on this page is positioned over
# another element's text, and nothing has a background image). Disabled controls are
# exempt (WCAG 1.4.3); large text needs 3:1, the rest 4.5:1.
CONTRAST = """() => {
  const parse = (css) => {
    const m = css.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return [0, 0, 0, 0];
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, below) => {  // source-over, straight alpha
    const a = top[3] + below[3] * (1 - top[3]);
    if (a === 0) return [0, 0, 0, 0];
    const c = (i) => (top[i] * top[3] + below[i] * below[3] * (1 - top[3])) / a;
    return [c(0), c(1), c(2), a];
  };
  const pixel = (chain, text) => {
    let inner = text || [0, 0, 0, 0];
    for (let i = chain.length - 1; i >= 0; i--) {
      const style = getComputedStyle(chain[i]);
      const c = over(inner, parse(style.backgroundColor));
      inner = [c[0], c[1], c[2], c[3] * parseFloat(style.opacity)];
    }
    return over(inner, [255, 255, 255, 1]);
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const ratio = (a, b) => {
    const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || el.closest(":disabled")) continue;
    const box = el.getBoundingClientRect();
    if (box.width <= 1 || box.height <= 1) continue;  // hidden, or read only by a screen reader
    const chain = [];
    for (let a = el; a; a = a.parentElement) chain.unshift(a);
    const style = getComputedStyle(el);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    const value = ratio(pixel(chain, parse(style.color)), pixel(chain, null));
    found.push({ text: node.textContent.trim().slice(0, 40), ratio: Math.round(value * 100) / 100,
                 needs: large ? 3 : 4.5 });
  }
  return found;
}"""


def images_drawn(page: Any, count: int) -> None:
    page.wait_for_function(
        f"() => document.images.length >= {count} && Array.from(document.images)"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000,
    )


def current_drawn(page: Any, record_id: str) -> None:
    """The page shows ``record_id`` and its image is drawn."""
    page.wait_for_function(
        f"() => document.querySelector('#queue li.current')?.dataset.recordId === {record_id!r}"
        " && document.querySelector('#current-image')?.naturalWidth > 0",
        timeout=30_000,
    )


def tab_to(page: Any, focus: str, presses: int = 12) -> list[dict[str, Any]]:
    """Tab until the element marked ``focus`` has it; every stop on the way, that one last."""
    stops = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        stop = page.evaluate(FOCUSED)
        stops.append(stop)
        if stop and stop["focus"] == focus:
            return stops
    raise AssertionError(f"Tab never reached {focus}: {stops}")


def test_a_record_is_answered_with_the_keyboard_alone(env: Env, served: str, browser: Any) -> None:
    """Tab reaches the current row and then the answers, each stop shows its focus, Enter
    answers, the live region says so, and the focus stays in the page for the next one."""
    first = env.record("NEEDS_REVIEW", age=timedelta(hours=3))
    second = env.record("NEEDS_REVIEW", age=timedelta(hours=2))
    third = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    page, console = open_page(browser, served)
    try:
        images_drawn(page, 4)
        # The queue is one stop (its current row), not one per image: the answers follow.
        stops = tab_to(page, "row")
        assert stops[-1]["current"] == "true"
        stops += tab_to(page, "answer:motorcycle", presses=3)
        assert [s["focus"] for s in stops if s and s["focus"].startswith("answer:")] == [
            "answer:bicycle",
            "answer:motorcycle",
        ]
        for stop in stops:
            assert stop is not None, stops
            assert stop["outline"] or stop["shadow"], stop
        page.keyboard.press("Enter")
        page.wait_for_selector("#queue li:first-child[data-state='done']", timeout=30_000)
        status = page.get_by_role("status")
        assert status.inner_text().startswith("saved: ") and "motorcycle" in status.inner_text()
        # The focus did not fall back to the document's start with the re-drawn buttons,
        # nor onto the next image's answer: a second Enter (a held one) answers nothing.
        assert page.evaluate(FOCUSED)["focus"] == "detail"
        page.keyboard.press("Enter")
        page.wait_for_timeout(500)
        assert page.locator("#queue li[data-state='done']").count() == 1
        # An answer key, then the row's arrows, with the focus on the current row.
        images_drawn(page, 4)
        page.keyboard.press("b")
        page.wait_for_selector("#queue li:nth-child(2)[data-state='done']", timeout=30_000)
        tab_to(page, "row")
        page.keyboard.press("ArrowUp")  # to the second again, which moves the focus with it
        focused = page.evaluate(FOCUSED)
        assert focused["focus"] == "row" and focused["current"] == "true"
        assert page.locator("#queue li.current").get_attribute("data-record-id") == second
        page.keyboard.press("ArrowDown")
        page.keyboard.press("n")
        page.wait_for_selector("#queue li:nth-child(3)[data-state='done']", timeout=30_000)
        # The last one: the live region says the queue is done.
        assert "every image in the queue is answered" in status.inner_text()
        assert console == []
    finally:
        page.close()
    assert [(env.get(r)["status"], env.get(r)["review_label"]) for r in (first, second, third)] == [
        ("REVIEWED", "motorcycle"),
        ("REVIEWED", "bicycle"),
        ("REVIEWED", "neither"),
    ]


def test_the_page_names_its_parts_for_assistive_technology(
    env: Env, served: str, browser: Any
) -> None:
    """Language, title, headings, named buttons (an answer's name is the answer, its key
    given as its shortcut), the current row marked, images named by their key, a live
    region."""
    env.record("NEEDS_REVIEW", age=timedelta(hours=2), suffix="-a <em>key.png")
    env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    page, _ = open_page(browser, served)
    try:
        images_drawn(page, 3)
        assert page.get_attribute("html", "lang") == "en"
        assert page.title()
        assert page.get_by_role("heading", level=1).count() == 1
        assert page.get_by_role("heading", level=2).count() >= 2
        for answer, key in (("bicycle", "b"), ("motorcycle", "m"), ("neither", "n")):
            button = page.get_by_role("button", name=answer, exact=True)
            assert button.count() == 1, answer
            assert button.evaluate("b => b.tagName") == "BUTTON"
            assert button.get_attribute("aria-keyshortcuts") == key
        rows = page.get_by_role("list", name="images waiting for review").get_by_role("button")
        assert rows.count() == 2
        first = page.get_by_role("button", name="img-1-a <em>key.png bicycle 0.610 NEEDS_REVIEW")
        assert first.count() == 1 and first.get_attribute("aria-current") == "true"
        assert rows.nth(1).get_attribute("aria-current") is None
        # The image under review is named after its upload (as text: the key is markup).
        image = page.get_by_role("img", name="-a <em>key.png")
        assert image.count() == 1 and image.evaluate("i => i.id") == "current-image"
        assert page.get_by_role("status").count() == 1
        tree = page.locator("body").aria_snapshot()
        assert '- button "bicycle"' in tree and '- button "neither"' in tree, tree
    finally:
        page.close()


def test_answer_keys_do_not_fire_while_typing_and_can_be_turned_off(
    env: Env, served: str, browser: Any
) -> None:
    """A letter typed into a text field is text, not an answer; and a reviewer who wants
    no single-key shortcuts (speech input, WCAG 2.1.4) turns them off, for later visits
    too, with the arrows still moving."""
    record = env.record("NEEDS_REVIEW", age=timedelta(hours=2))
    env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    page, console = open_page(browser, served)
    try:
        images_drawn(page, 3)
        # A text field in the page (an extension's, or one the page may add one day).
        page.evaluate(
            "() => { const f = document.createElement('input'); f.id = 'typed';"
            " document.querySelector('header').append(f); }"
        )
        page.focus("#typed")
        page.keyboard.type("bmn")
        page.keyboard.press("ArrowDown")
        page.wait_for_timeout(500)
        assert page.input_value("#typed") == "bmn"
        assert page.locator("#queue li[data-state='done']").count() == 0
        assert page.locator("#queue li.current").get_attribute("data-record-id") == record
        # Turned off with its switch, by keyboard: answer keys do nothing, arrows move.
        tab_to(page, "shortcuts")
        page.keyboard.press("Space")
        assert page.get_by_role("checkbox", name="single-key shortcuts").is_checked() is False
        page.reload()
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        images_drawn(page, 3)
        assert page.get_by_role("checkbox", name="single-key shortcuts").is_checked() is False
        page.keyboard.press("b")
        page.keyboard.press("ArrowDown")
        page.wait_for_timeout(500)
        assert page.locator("#queue li[data-state='done']").count() == 0
        assert page.locator("#queue li.current").get_attribute("data-record-id") != record
        assert console == []
    finally:
        page.close()
    assert env.get(record)["status"] == "NEEDS_REVIEW"


def test_text_keeps_its_contrast_in_every_state(env: Env, served: str, browser: Any) -> None:
    """Rows answered, in conflict and waiting, badges, an error message, the header:
    every visible text has a contrast of 4.5:1 (3:1 when large) with its background."""
    answered = env.record("NEEDS_REVIEW", age=timedelta(hours=3))
    taken = env.record("NEEDS_REVIEW", age=timedelta(hours=2))
    gone = env.record("NEEDS_REVIEW", age=timedelta(hours=1))
    item = env.get(gone)
    env.s3.delete_object(Bucket=BUCKET, Key=item["key"], VersionId=item["version_id"])
    page, _ = open_page(browser, served)
    try:
        current_drawn(page, answered)
        page.keyboard.press("b")
        page.wait_for_selector(f"#queue li[data-record-id='{answered}'][data-state='done']")
        # Another reviewer answers the second while the page shows it: a conflict.
        service(env).answer(taken, expected_status="NEEDS_REVIEW", answer="bicycle", reviewer="x")
        current_drawn(page, taken)
        page.keyboard.press("m")
        page.wait_for_selector(f"#queue li[data-record-id='{taken}'][data-state='conflict']")
        page.keyboard.press("ArrowDown")  # the deleted upload: its error message
        assert page.locator("#queue li.current").get_attribute("data-record-id") == gone
        page.wait_for_selector("#status.error:has-text('could not be loaded')", timeout=30_000)
        found = page.evaluate(CONTRAST)
        texts = " ".join(f["text"] for f in found)
        assert "REVIEWED" in texts and "could not be loaded" in texts and "reviewer" in texts
        low = [f for f in found if f["ratio"] < f["needs"]]
        assert low == [], low
    finally:
        page.close()
    assert env.get(answered)["status"] == "REVIEWED"


@pytest.mark.parametrize("width", [640, 320])
def test_a_narrow_or_zoomed_window_needs_no_sideways_scrolling(
    env: Env, served: str, browser: Any, width: int
) -> None:
    """A 1280-pixel window at 200% (640 CSS pixels) and at 400% (320, WCAG 1.4.10): the
    page fits its width, and the image and every answer button are within it."""
    env.record("NEEDS_REVIEW", age=timedelta(hours=1), suffix="-" + "long" * 30 + ".png")
    page = browser.new_page(viewport={"width": width, "height": 720})
    try:
        page.goto(served)
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        images_drawn(page, 2)
        sizes = page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert sizes[0] <= sizes[1], sizes
        for element in [page.locator("#current-image"), *page.locator(".answers button").all()]:
            box = element.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box
    finally:
        page.close()
