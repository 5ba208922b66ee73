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
import sys
from typing import Any


class NotJSON(ValueError):
    """The text cannot be read as JSON; ``line`` is 1-based where the parser knows it."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.line = line


def load_json(text: str | bytes | bytearray) -> Any:
    """``json.loads(text)``, raising only ``NotJSON`` for text it cannot read."""
    try:
        return json.loads(text)
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
