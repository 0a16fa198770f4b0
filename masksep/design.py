"""A study's design: the one dataclass the sweep spec loads and the report reads.

A study trains head variants x ``repeats`` seeds with common random numbers and
compares every variant with ``reference`` (masksep/sweep/spec.py runs it,
masksep/report/study.py checks the paper's claims on it). The spec reads the
design from its ``study:`` block, completes it (the default reference and deep
variant come from the trial config) and stores it in sweep.json; a results
folder keeps the same block in study.json. Both are read back here, with the
same rules, so the report never re-parses the design by hand.

Torch-free and Ray-free: loading a design imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from masksep import config as config_mod
from masksep.errors import ConfigError, UserError

CLAIM_KEYS = ("deep",)  # study.claims: the deep variant of claims 1 and 3


@dataclass
class PooledRow:
    """A row of the report that pools several variants (labelled as pooled)."""

    name: str = ""
    variants: list[str] = field(default_factory=list)


@dataclass
class StudyDesign:
    """Head variants x ``repeats`` seeds, compared with ``reference``."""

    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> dotted overrides
    reference: str = ""  # the spec defaults it to the shallow variant
    margin_db: float = 0.3  # non-inferiority margin of claim 3 (deep is an efficient OG)
    claims: dict[str, str] = field(default_factory=dict)  # {deep: NAME}: the deep variant of claims 1, 3
    pooled: list[PooledRow] = field(default_factory=list)  # rows that pool variants, labelled as such
    # Optimizer steps at which every trial's best-on-validation weights so far are
    # scored on test too (train.milestones): the claims at each budget, from one run.
    milestones: list[int] = field(default_factory=list)
    # What the tuning chose, per variant (masksep/tuned.py writes it into the study it runs)
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Seeds per variant: the spec's top-level ``repeats``, stored with the design
    # (None for a design read from a folder written before it was stored).
    repeats: int | None = None

    @property
    def deep(self) -> str | None:
        return self.claims.get("deep")

    @property
    def pooled_members(self) -> dict[str, list[str]]:
        return {row.name: list(row.variants) for row in self.pooled}

    def to_dict(self) -> dict[str, Any]:
        """sweep.json's ``study`` block."""
        out: dict[str, Any] = {
            "variants": self.variants, "reference": self.reference, "margin_db": self.margin_db,
            "claims": dict(self.claims),
            "pooled": [{"name": p.name, "variants": list(p.variants)} for p in self.pooled],
            "milestones": list(self.milestones)}
        if self.tuned:
            out["tuned"] = self.tuned
        if self.repeats is not None:
            out["repeats"] = self.repeats
        return out

    def check(self, source: str) -> None:
        """The design's own rules (those that need no trial config); a broken one
        is one UserError naming ``source`` and the field."""
        def bad(name: str, why: str) -> UserError:
            return ConfigError(f"study.{name}", why, source)

        names = list(self.variants)
        if self.reference not in self.variants:
            raise bad("reference", f"{self.reference!r} is not one of the variants ({', '.join(names)})")
        if not self.margin_db >= 0:
            raise bad("margin_db", f"must be >= 0, got {self.margin_db}")
        for key, value in self.claims.items():
            if key not in CLAIM_KEYS:
                raise bad(f"claims.{key}", f"unknown claim (known: {', '.join(CLAIM_KEYS)})")
            if value not in self.variants:
                raise bad(f"claims.{key}", f"{value!r} is not one of the variants")
        for i, row in enumerate(self.pooled):
            unknown = [v for v in row.variants if v not in self.variants]
            if not row.name or len(row.variants) < 2 or unknown:
                raise bad(f"pooled[{i}]", "needs a name and at least two of the study's variants")
        ms = self.milestones
        if any(m < 1 for m in ms) or any(a >= b for a, b in zip(ms, ms[1:], strict=False)):
            raise bad("milestones", f"expected increasing optimizer steps >= 1, got {ms!r}")
        if self.repeats is not None and self.repeats < 1:
            raise bad("repeats", f"expected an integer >= 1, got {self.repeats!r}")


def read_design(block: Any, source: str) -> StudyDesign:
    """A stored design (sweep.json's or study.json's ``study`` block), typed and
    checked; a bad field is one UserError naming ``source`` and the field."""
    if not isinstance(block, dict):
        raise UserError(f"{source}: study: expected a mapping")
    design = config_mod.build(StudyDesign, block, "study", source)
    design.check(source)
    return design


__all__ = ["CLAIM_KEYS", "PooledRow", "StudyDesign", "read_design"]
