"""Registry: the names one config field accepts, each with what it builds.

One type for every choice the model makes (``encoder.kind``, ``backbone.kind``,
``head.kind``, ``head.hidden_act``, ``head.mask_act``, ``head.layout``) and for the data
set (``data.kind``, masksep/data/datasets.py), after Asteroid's ``activations.get``. The
config's ``Literal`` choices are the name tuples of masksep.models.spec and
masksep.data.spec (torch-free); a registry made with ``names`` refuses to exist
unless it builds exactly those, so a name is in both places or in neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Generic, TypeVar

from masksep.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> builders for the config field ``field`` (e.g. ``"head.kind"``).

    Fixed once built. ``names``: the names the config accepts for ``field``
    (masksep.models.spec, or ``spec``: the file that lists them); the entries must be
    exactly those, in that order.
    """

    def __init__(self, field: str, entries: Mapping[str, T], names: tuple[str, ...] | None = None,
                 spec: str = "masksep/models/spec.py"):
        self.field = field
        self._entries = MappingProxyType(dict(entries))
        if names is not None and tuple(self._entries) != tuple(names):
            raise RuntimeError(f"{field}: the registry builds {list(self._entries)} but the config "
                               f"accepts {list(names)} ({spec})")

    def names(self) -> tuple[str, ...]:
        """The names, in the order they were listed (the config's error messages use it)."""
        return tuple(self._entries)

    def get(self, name: str) -> T:
        """The builder called ``name``; an unknown name is a one-line ConfigError
        naming the field (reachable only from a config that skipped validation)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(self._entries)
            raise ConfigError(self.field, f"unknown name {name!r} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.field!r}, {list(self._entries)})"
