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

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from masksep import config as config_mod
from masksep.errors import ConfigError, UserError

SENSITIVITY_DB = (0.1, 0.3, 0.5)  # claim 3's verdict is also shown at these margins


@dataclass
class Claims:
    """The comparators of the paper's claims, named in the spec before any data.

    ``deep``: the deep head of claims 1 and 3. OG is read two ways. *learned*: the
    og head groups its P outputs with a trained soft assignment (``og``: claim 3's
    comparator; ``og_family``: claim 2's, the better of its members picked on
    validation, the CI Bonferroni-adjusted for its size). *oracle*: trained with
    the best-assignment grouping of MixIT (``og_oracle``, ``og_oracle_family``),
    scored twice, with the best assignment against the references and with a
    grouping fixed on validation that never sees the test references. Left out,
    the family is every og variant of that grouping with P > C and the single
    comparator its pick on validation; the report says so."""

    deep: str = ""
    og: str = ""
    og_family: list[str] | None = None  # None: not declared (every og of that grouping, P > C)
    og_oracle: str = ""
    og_oracle_family: list[str] | None = None

    def single(self, grouping: str) -> str:
        return self.og if grouping == "learned" else self.og_oracle

    def family(self, grouping: str) -> list[str] | None:
        return self.og_family if grouping == "learned" else self.og_oracle_family


def default_reference(heads: dict[str, dict[str, Any]]) -> str:
    """The reference when the spec names none: the first shallow variant."""
    return next((n for n, h in heads.items() if h["head"] == "shallow"), "")


def default_deep(heads: dict[str, dict[str, Any]]) -> str | None:
    """The deep variant when the spec names none: the first of depth 3 (the paper's
    head), else the first deep one of depth >= 2. The spec and the report of a
    folder written before the spec stored it both use this rule."""
    deep = [n for n, h in heads.items() if h["head"] == "deep" and h["depth"] >= 2]
    depth3 = [n for n in deep if heads[n]["depth"] == 3]
    return (depth3 or deep or [None])[0]


def og_members(heads: dict[str, dict[str, Any]], grouping: str) -> list[str]:
    """The og variants of one grouping with P > C: the default family."""
    return [n for n, h in heads.items() if h["head"] == "og" and h["grouping"] == grouping
            and h["oversep"] > h["n_src"]]


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
    sensitivity_db: list[float] = field(default_factory=lambda: list(SENSITIVITY_DB))
    claims: Claims = field(default_factory=Claims)  # the comparators, named before the data
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
        return self.claims.deep or None

    @property
    def pooled_members(self) -> dict[str, list[str]]:
        return {row.name: list(row.variants) for row in self.pooled}

    def to_dict(self) -> dict[str, Any]:
        """sweep.json's ``study`` block."""
        out: dict[str, Any] = {
            "variants": self.variants, "reference": self.reference, "margin_db": self.margin_db,
            "sensitivity_db": list(self.sensitivity_db),
            "claims": {k: v for k, v in dataclasses.asdict(self.claims).items()
                       if v or isinstance(v, list)},
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
        if not self.sensitivity_db or any(not m > 0 for m in self.sensitivity_db):
            raise bad("sensitivity_db", f"expected margins > 0 dB, got {self.sensitivity_db!r}")
        for key, value in dataclasses.asdict(self.claims).items():
            names_given = value if isinstance(value, list) else [value] if value else []
            if isinstance(value, list) and not value:
                raise bad(f"claims.{key}", "is empty: name the variants the best is picked from")
            for name in names_given:
                if name not in self.variants:
                    raise bad(f"claims.{key}", f"{name!r} is not one of the variants")
        for i, row in enumerate(self.pooled):
            unknown = [v for v in row.variants if v not in self.variants]
            if not row.name or len(row.variants) < 2 or unknown:
                raise bad(f"pooled[{i}]", "needs a name and at least two of the study's variants")
        ms = self.milestones
        if any(m < 1 for m in ms) or any(a >= b for a, b in zip(ms, ms[1:], strict=False)):
            raise bad("milestones", f"expected increasing optimizer steps >= 1, got {ms!r}")
        if self.repeats is not None and self.repeats < 1:
            raise bad("repeats", f"expected an integer >= 1, got {self.repeats!r}")

    def check_heads(self, heads: dict[str, dict[str, Any]], source: str) -> None:
        """The rules that need each variant's head (``heads``: name -> its head
        kind, depth, oversep, grouping and n_src): each comparator is of its kind."""
        def bad(name: str, why: str) -> UserError:
            return ConfigError(f"study.claims.{name}", why, source)

        deep = self.claims.deep
        if deep and (heads[deep]["head"] != "deep" or heads[deep]["depth"] < 2):
            raise bad("deep", f"must name a deep variant of depth >= 2, got {deep!r}")
        for grouping, key in (("learned", "og"), ("oracle", "og_oracle")):
            fits = set(og_members(heads, grouping))
            what = f"an og variant with {grouping} grouping and P > C"
            single = self.claims.single(grouping)
            if single and single not in fits:
                raise bad(key, f"must name {what}, got {single!r}")
            for name in self.claims.family(grouping) or []:
                if name not in fits:
                    raise bad(f"{key}_family", f"must list only {what}, got {name!r}")


def read_design(block: Any, source: str) -> StudyDesign:
    """A stored design (sweep.json's or study.json's ``study`` block), typed and
    checked; a bad field is one UserError naming ``source`` and the field."""
    if not isinstance(block, dict):
        raise UserError(f"{source}: study: expected a mapping")
    design = config_mod.build(StudyDesign, block, "study", source)
    design.check(source)
    return design


__all__ = ["SENSITIVITY_DB", "Claims", "PooledRow", "StudyDesign", "default_deep",
           "default_reference", "og_members", "read_design"]
