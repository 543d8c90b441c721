"""Declared, typed options and the reader that checks them (Klipper's configfile idea).

A :class:`Param` declares one option: its type, default, bounds, choices and, for options that
name something else in the site (a meter, a point), what it refers to. A :class:`Section` reads a
TOML table against a set of params, records every problem instead of stopping at the first, and
reports options nobody declared with a "did you mean" hint. Built-in and third-party types use
the same machinery, so their errors look the same.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from busguard.errors import ConfigError, ConfigProblem


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_PLURAL = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
_TYPE_WORDS = {bool: "a boolean (true/false)", int: "an integer", float: "a number",
               str: "a string", list: "a list", dict: "a table"}


@dataclass(frozen=True)
class Param:
    """One declared option of a section.

    ``ref`` names what a string (or each string of a list) must refer to: ``"meter"``,
    ``"probe"``, ``"breaker"`` or ``"point"`` (an input point some device declares). The site
    loader checks those references once every section is read.

    ``choices_from`` names a kind of type the plugins register (``"gpio_backend"``): the valid
    values are the names registered, bound when the site is read (:func:`bind_choices`).
    """

    type: type
    default: Any = REQUIRED
    minval: float | None = None
    maxval: float | None = None
    above: float | None = None
    choices: tuple[Any, ...] | None = None
    item: type | None = None
    ref: str | None = None
    unit: str = ""
    doc: str = ""
    min_items: int = 0
    choices_from: str | None = None

    def describe(self) -> str:
        """What a valid value looks like, in words for the error message."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = _TYPE_WORDS.get(self.type, self.type.__name__)
        if self.type is list and self.item is not None:
            what = f"a list of {_PLURAL.get(self.item, self.item.__name__)}"
        bounds = []
        if self.minval is not None:
            bounds.append(f">= {_num(self.minval)}")
        if self.above is not None:
            bounds.append(f"> {_num(self.above)}")
        if self.maxval is not None:
            bounds.append(f"<= {_num(self.maxval)}")
        if bounds:
            what += " " + " and ".join(bounds)
        if self.unit:
            what += f" ({self.unit})"
        return what


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def bind_choices(params: Mapping[str, Param],
                 choices: Callable[[str], tuple[str, ...]]) -> Mapping[str, Param]:
    """``params`` with every ``choices_from`` replaced by the names ``choices(kind)`` lists."""
    if not any(p.choices_from for p in params.values()):
        return params
    return {name: replace(p, choices=choices(p.choices_from) or ("(none registered)",),
                          choices_from=None) if p.choices_from else p
            for name, p in params.items()}


class Values(Mapping[str, Any]):
    """A section's validated options: frozen, every declared option present with its default
    applied once (when the file was read), read as ``v["name"]`` (what blocks and drivers do)
    or ``v.name``. Lists are tuples and tables read-only mappings (one level deep), so a type
    cannot change the site it was built from."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] = MappingProxyType({})) -> None:
        object.__setattr__(self, "_data", {k: _frozen(v) for k, v in data.items()})

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_data":  # copy/pickle probes, a half-built one
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"no option {name!r} (options: "
                                 f"{', '.join(self._data) or 'none'})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"options are frozen; cannot set {name!r}")

    def __repr__(self) -> str:
        return f"Values({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (the I/O process link)
        return (Values, ({k: _thawed(v) for k, v in self._data.items()},))


def _frozen(value: Any) -> Any:
    """A table option read-only (its own copy: a shared default dict stays unchanged)."""
    if isinstance(value, dict):
        return MappingProxyType(dict(value))
    if isinstance(value, list):
        return tuple(value)
    return value


def _thawed(value: Any) -> Any:
    return dict(value) if isinstance(value, MappingProxyType) else value


def defaults(params: Mapping[str, Param]) -> Values:
    """The declared defaults alone (a table a site does not have; required options None)."""
    return Values({n: None if p.default is REQUIRED else p.default for n, p in params.items()})


@dataclass
class Reference:
    """A value that names another object; checked after the whole file is read."""

    kind: str
    name: str
    key: str


@dataclass
class Section:
    """A reader over one TOML table at ``path`` (e.g. ``meter[2]``) in ``file``."""

    file: str
    path: str
    data: Mapping[str, Any]
    problems: list[ConfigProblem]
    references: list[Reference] = field(default_factory=list)
    _used: set[str] = field(default_factory=set)

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, name: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, self.key(name), message))

    def has(self, name: str) -> bool:
        return name in self.data

    def raise_problems(self) -> None:
        """Raise every problem noted so far as one :class:`ConfigError` (none: return)."""
        if self.problems:
            raise ConfigError(self.problems)

    def get(self, name: str, param: Param) -> Any:
        """Read one option; on a problem, record it and return the default (or None)."""
        self._used.add(name)
        fallback = None if param.default is REQUIRED else param.default
        if name not in self.data:
            if param.default is REQUIRED:
                self.problem(name, f"missing required option; expected {param.describe()}")
            return param.default if param.default is not REQUIRED else None
        value = self.data[name]
        checked = self._check(name, value, param)
        return fallback if checked is _BAD else checked

    def read(self, params: Mapping[str, Param]) -> dict[str, Any]:
        """Read every declared param; returns a plain dict of validated values."""
        return {name: self.get(name, p) for name, p in params.items()}

    def values(self, params: Mapping[str, Param], **extra: Any) -> Values:
        """:meth:`read`, frozen (plus ``extra`` options the caller read itself)."""
        return Values({**self.read(params), **extra})

    def finish(self, extra_known: tuple[str, ...] = ()) -> None:
        """Report every option present in the table that nobody read."""
        known = self._used | set(extra_known)
        for name in self.data:
            if name in known:
                continue
            hint = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            valid = ", ".join(sorted(known)) or "none"
            msg = f"unknown option {name!r}"
            msg += f"; did you mean {hint[0]!r}?" if hint else f"; valid options: {valid}"
            self.problem(name, msg)

    def _check(self, name: str, value: Any, p: Param) -> Any:
        if p.type is list:
            if not isinstance(value, list):
                self.problem(name, f"got {value!r}; expected {p.describe()}")
                return _BAD
            if len(value) < p.min_items:
                self.problem(name, f"got {len(value)} items; expected at least {p.min_items}")
                return _BAD
            out = []
            for i, item in enumerate(value):
                item_param = Param(p.item or str, minval=p.minval, maxval=p.maxval,
                                   above=p.above, choices=p.choices, unit=p.unit, ref=p.ref)
                got = self._check(f"{name}[{i}]", item, item_param)
                if got is _BAD:
                    return _BAD
                out.append(got)
            return tuple(out)
        shown = value
        if p.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if p.type is dict:
            if not isinstance(value, dict):
                self.problem(name, f"got {value!r}; expected {p.describe()}")
                return _BAD
            return value
        if not isinstance(value, p.type) or (p.type is not bool and isinstance(value, bool)):
            self.problem(name, f"got {value!r} ({_typename(value)}); expected {p.describe()}")
            return _BAD
        if p.type is float and not math.isfinite(value):
            self.problem(name, f"got {value!r}; expected a finite number")
            return _BAD
        if p.choices is not None and value not in p.choices:
            hint = ""
            if isinstance(value, str):
                close = difflib.get_close_matches(value, [str(c) for c in p.choices], n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
            self.problem(name, f"got {value!r}; expected {p.describe()}{hint}")
            return _BAD
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and ((p.minval is not None and value < p.minval) or (
                p.maxval is not None and value > p.maxval) or (
                p.above is not None and value <= p.above)):
            self.problem(name, f"got {shown!r}; expected {p.describe()}")
            return _BAD
        if p.type is str and p.ref is not None:
            self.references.append(Reference(p.ref, value, self.key(name)))
        return value


_BAD: Any = object()


def _typename(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "table"}.get(type(value), type(value).__name__)
