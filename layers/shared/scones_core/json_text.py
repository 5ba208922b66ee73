"""JSON that comes from outside the code: messages, capture files, reports, answers.

``json.loads`` fails on such text in more ways than ``JSONDecodeError``: bytes that are
not UTF-8 (``UnicodeDecodeError``), an integer longer than the interpreter converts
(a plain ``ValueError``), nesting deeper than the parser's recursion (``RecursionError``)
and a value that is not text at all (``TypeError``). Each reader catching its own subset
left some of them to crash the whole run; ``load_json`` turns every one into ``NotJSON``,
whose message names the problem.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any


class NotJSON(ValueError):
    """The text cannot be read as JSON; ``line`` is 1-based where the parser knows it."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.line = line


class _NotFinite(ValueError):
    """``NaN``, ``Infinity`` or a number too large for a float: not JSON (RFC 8259), but
    Python's parser takes them, and they break every ``int()`` and comparison after."""


def _constant(name: str) -> Any:
    raise _NotFinite(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def load_json(text: str | bytes | bytearray) -> Any:
    """``json.loads(text)``, raising only ``NotJSON`` for text it cannot read."""
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_finite)
    except _NotFinite as exc:
        raise NotJSON(f"not JSON: {exc} is not a finite number") from exc
    except json.JSONDecodeError as exc:
        raise NotJSON(f"not JSON: {exc}", exc.lineno) from exc
    except UnicodeDecodeError as exc:
        raise NotJSON(f"not UTF-8 text: {exc}") from exc
    except ValueError as exc:
        raise NotJSON(
            f"not readable JSON: an integer longer than {sys.get_int_max_str_digits()} digits"
        ) from exc
    except RecursionError as exc:
        raise NotJSON("not readable JSON: nested deeper than the parser goes") from exc
    except TypeError as exc:
        raise NotJSON(f"not JSON text but {type(text).__name__}") from exc
