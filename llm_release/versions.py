"""Model versions are positive integers (Triton's rule); values from templates arrive as text."""

from __future__ import annotations

from llm_release.errors import SpecError


def parse_version(value, field: str = "version") -> int:
    """Accept 3 or "3"; refuse 0, -1, "v3", 2.5 and booleans with a message naming `field`."""
    if isinstance(value, bool):
        raise SpecError(field, f"{value!r} is not a version", "use a positive integer such as 1, 2, 3")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value < 1:
        raise SpecError(field, f"{value!r} is not a positive integer", "Triton versions are 1, 2, 3, ...")
    return value
