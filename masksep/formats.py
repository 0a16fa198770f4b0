"""How numbers read in every markdown table masksep writes (the report, the study,
the analysis, the overview): one formatter per kind of number."""

from __future__ import annotations

import math
from typing import Any


def ok(value: Any) -> bool:
    """A finite number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals; "-" for a missing one."""
    return f"{value:.{digits}f}" if ok(value) else "-"


def signed(value: Any, digits: int = 2) -> str:
    """A difference: always signed (+0.12, -0.30); "-" for a missing one."""
    return f"{value:+.{digits}f}" if ok(value) else "-"


def text(value: Any, digits: int = 3) -> str:
    """A value as it is: floats with ``digits`` decimals, anything else as str; "-" for None or NaN."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "-"
    return str(value)


def ci(low: Any, high: Any, digits: int = 2, *, sign: bool = True, missing: str = "no CI (n < 2)") -> str:
    """A confidence interval, [low, high], signed by default (the CI of a difference)."""
    if not (ok(low) and ok(high)):
        return missing
    one = signed if sign else fmt
    return f"[{one(low, digits)}, {one(high, digits)}]"


def macs(value: Any) -> str:
    """MACs (per second): 3.02M, 1.10G."""
    if not ok(value):
        return "-"
    return f"{value / 1e9:.2f}G" if value >= 1e9 else f"{value / 1e6:.2f}M"


def count(value: Any) -> str:
    """A parameter count: 33.4k, 1.05M."""
    if not ok(value):
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"


def p_value(value: Any) -> str:
    """A p-value: three decimals, scientific below 0.001."""
    if not ok(value):
        return "-"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def level(value: float) -> str:
    """A confidence level: 95%, 97.5%."""
    return f"{value:.1%}".replace(".0%", "%")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])
