"""Text from uploaders (object keys, and reasons that quote them) as a person is shown it.

A key may hold characters that drive a terminal (ESC starts colour, cursor and title
sequences) or that reorder or hide text: ``invoice\\u202egnp.exe`` reads as
``invoiceexe.png``. Every place that shows such text to a person (the terminal's tables,
the run report, the review page) shows those characters as escapes instead.
"""

from __future__ import annotations

import re

# C0 and C1 controls, and the format characters that reorder or hide text (bidirectional
# marks, embeddings, overrides and isolates; zero widths; line and paragraph separators).
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def shown(text: str) -> str:
    """``text`` with every unprintable character as its escape (``\\x1b``, ``\\u202e``)."""
    return UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
