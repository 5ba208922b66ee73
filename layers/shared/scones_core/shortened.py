"""Text from elsewhere (a service's message, a queue message's body), kept to a size.

What is cut is said, with how much, so a reader knows the text goes on.
"""

from __future__ import annotations


def shortened(text: str, limit: int) -> str:
    """``text`` whole, or its first ``limit`` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"
