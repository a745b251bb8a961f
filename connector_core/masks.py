"""Field masks: the built-in ones, registered through the same hook as a plugin's.

A mask factory is called once per policy field when a policy compiles, with the parameter
written in the policy (``truncate: 3`` gives ``3``; a bare ``last4`` gives None) and a
:class:`MaskContext`; it returns the function applied to each value, which also receives
the whole record (``city_only`` needs it). A factory raises ValueError for a bad parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from connector_core.records import Record

MaskFunction = Callable[[Any, Record], Any]


@dataclasses.dataclass(frozen=True)
class MaskContext:
    """What masks may need from the network: the keyed-hash secret, fetched lazily."""

    hash_key: Callable[[], bytes]

    @classmethod
    def for_validation(cls) -> MaskContext:
        """A context for checking parameters at load time; never used on real data."""
        return cls(hash_key=lambda: b"validation-only")
