"""Stream-time formatting shared by prompts and memory text (floor 0)."""

from __future__ import annotations


def hms(t: float, decimals: bool = False) -> str:
    """`HH:MM:SS` (hours grow past 24 for multi-day streams); `HH:MM:SS.s` when asked and needed."""
    t = max(0.0, t)
    whole = int(t)
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    frac = round(t - whole, 1)
    if decimals and frac:
        if frac >= 1.0:  # 9.96 rounds to 10.0
            return hms(whole + 1.0)
        return f"{h:02d}:{m:02d}:{s:02d}.{int(round(frac * 10))}"
    return f"{h:02d}:{m:02d}:{s:02d}"


def span(start: float, end: float, decimals: bool = False) -> str:
    return f"{hms(start, decimals)}-{hms(end, decimals)}"
