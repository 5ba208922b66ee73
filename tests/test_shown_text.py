"""Keys as a person is shown them: nothing in them may hide, reorder or drive the text."""

from __future__ import annotations

import unicodedata

import pytest

from scones.shown_text import shown


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # Tag characters spell a hidden word ("ev") that no font draws.
        ("cat\U000e0065\U000e0076.png", "cat\\U000e0065\\U000e0076.png"),
        ("ca\u00adt.png", "ca\\xadt.png"),  # soft hyphen
        ("cat\u180e.png", "cat\\u180e.png"),  # Mongolian vowel separator
        ("ca\u034ft.png", "ca\\u034ft.png"),  # combining grapheme joiner
        ("cat\ufe0f.png", "cat\\ufe0f.png"),  # variation selector
        ("c\ufff9a\ufffbt.png", "c\\ufff9a\\ufffbt.png"),  # interlinear annotation
        ("\u3164cat.png", "\\u3164cat.png"),  # Hangul filler
        ("invoice\u202egnp.exe", "invoice\\u202egnp.exe"),  # right-to-left override
        ("cat\x1b[2J.png", "cat\\x1b[2J.png"),  # a terminal's escape
        ("cat\udcff.png", "cat\\udcff.png"),  # a file name's byte that is not UTF-8
    ],
)
def test_characters_that_hide_or_drive_text_are_shown_as_escapes(key: str, expected: str) -> None:
    assert shown(key) == expected


def test_every_format_character_of_the_basic_plane_that_draws_nothing_is_escaped() -> None:
    """Every format character (category Cf) from U+00AD to U+FFFB that Unicode also counts
    as default-ignorable, or that hides text; printable keys pass unchanged."""
    for code in range(0xA0, 0xFFFC):
        char = chr(code)
        if unicodedata.category(char) == "Cf" and not 0x600 <= code <= 0x8FF:
            assert shown(char) != char, f"U+{code:04X} {unicodedata.name(char, '')}"
    for printable in ("incoming/camera-7/delivery photo 1.png", "été/中文/🚲.jpg", "a+b%2B.png"):
        assert shown(printable) == printable
