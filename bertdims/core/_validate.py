"""Validation helpers shared by every config: errors that name the parameter, the
value and what is allowed, raised before any expensive work starts."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Sequence


class ConfigError(ValueError):
    """A parameter has a value that is not allowed."""


def bad(name: str, value: Any, allowed: str) -> ConfigError:
    """Build the standard error: ``parameter 'name' = value: allowed ...``."""
    return ConfigError(f"parameter {name!r} = {value!r} is not allowed; {allowed}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise bad(name, value, "choose one of: " + ", ".join(map(str, choices)))


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)):
        raise bad(name, value, f"expected {kind}")
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        interval = ("(" if low_open else "[") + f"{lo}, {hi}" + (")" if high_open else "]")
        raise bad(name, value, f"expected {kind} in {interval}")


def check_dims(name: str, dims: Sequence[int] | None, hidden_size: int) -> None:
    """Dimensions must be distinct integers in [0, hidden_size)."""
    if dims is None:
        return
    if len(dims) == 0:
        raise bad(name, dims, "give at least one dimension, or None for all")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < hidden_size:
            raise bad(name, list(dims), f"every dimension must be an integer in [0, {hidden_size - 1}]"
                      f" (the model's hidden size is {hidden_size}); {d!r} is not")
    dup = sorted({d for d in dims if list(dims).count(d) > 1})
    if dup:
        raise bad(name, list(dims), f"dimensions must be distinct; repeated: {dup}")


def parse_int_list(text: str | Sequence[int] | None) -> list[int] | None:
    """``"3,17"`` -> ``[3, 17]``; ``"all"``/``None`` -> ``None``."""
    if text is None:
        return None
    if isinstance(text, str):
        if text.strip().lower() in ("", "all", "none"):
            return None
        try:
            return [int(t) for t in text.split(",")]
        except ValueError:
            raise bad("dims", text, "expected comma-separated integers such as '3,17', or 'all'") from None
    return [int(t) for t in text]


class ConfigMixin:
    """Dataclass helpers: dict round trip and a stable JSON form used for result keys."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict):
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown} for {cls.__name__}; "
                              f"allowed: {sorted(fields)}")
        return cls(**data)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)
