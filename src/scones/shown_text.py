"""Text from uploaders (object keys, and reasons that quote them) as a person is shown it.

A key may hold characters that drive a terminal (ESC starts colour, cursor and title
sequences) or that reorder or hide text: ``invoice\\u202egnp.exe`` reads as
``invoiceexe.png``, and ``cat.png`` with a soft hyphen or a tag character in it looks
like ``cat.png``. Every place that shows such text to a person (the terminal's tables,
the run report, the review page) shows those characters as escapes instead.
"""

from __future__ import annotations

import re

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters a font
# draws as nothing, so two keys that differ only by them look alike. Bidirectional marks,
# embeddings, overrides and isolates; zero widths; the soft hyphen; variation selectors;
# Hangul fillers; tag characters (which can spell a whole hidden word).
_IGNORABLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
# Those, C0 and C1 controls, line and paragraph separators, the interlinear annotation
# marks (which hide the text between them), and lone surrogates (a file name's bytes that
# are not UTF-8, which no terminal can print).
UNPRINTABLE = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufff9-\ufffb\ud800-\udfff{_IGNORABLE}]")


def shown(text: str) -> str:
    """``text`` with every unprintable character as its escape (``\\x1b``, ``\\u202e``)."""
    return UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
