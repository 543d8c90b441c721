"""Meter profiles: register maps as TOML data files, validated like site.toml.

A profile names each point a meter serves (the part after ``{device}.``, e.g. ``current_l1_a``),
where it lives and how to read it::

    [profile]
    name = "pm5000"
    description = "Schneider PowerLogic PM5000 series"
    source = "document the map was taken from"
    word_order = "ABCD"       # ABCD, CDAB, BADC or DCBA (default for 32-bit points)
    function = "holding"      # holding (FC 3) or input (FC 4) registers (default)
    address_base = 1          # 1: addresses are the documented 1-based register numbers
                              #    (wire address = number - 1); 0: protocol addresses as sent
    max_registers = 125       # optional: largest read this device accepts

    [points.current_l1_a]
    address = 3000
    type = "float32"          # int16, uint16, int32, uint32, float32, int64, uint64
    scale = 1.0               # engineering value = raw * scale
    unit = "A"
    # optional: function, word_order (override the defaults), ct (CT ratio applies; default
    # true for A, kW, kVA, kvar, kWh units), doc, encoding ("pf4q": Schneider's four-quadrant
    # power factor register, decoded to a signed IEC PF; see codec.decode_pf_4q)

A profile may say whether its meter measures the neutral current (``neutral_measured = true``:
a 4th CT) or computes it as the vector sum of the phase currents (``false``); the driver then
publishes ``{device}.neutral_measured`` (1 or 0) beside ``current_n_a``.

Bundled profiles live in ``busguard/profiles/*.toml``; a site may name one of them or a file of
its own (``profile = "profiles/my-meter.toml"``, relative to site.toml). The simulator serves
the same profiles: :func:`load_profile` and :meth:`PointDef.encode` are its API.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from busguard.config.params import Param, Section
from busguard.errors import ConfigError, ConfigProblem
from busguard.modbus import codec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.10 CI leg
    import tomli as tomllib

FUNCTIONS = ("holding", "input")
CT_UNITS = ("A", "kW", "kVA", "kvar", "kWh", "W", "VA", "var", "Wh", "varh", "kvarh")

PROFILE_PARAMS = {
    "name": Param(str, doc="profile name"),
    "description": Param(str, default=""),
    "source": Param(str, default="", doc="the register documentation the map comes from"),
    "word_order": Param(str, default="ABCD", choices=codec.WORD_ORDERS),
    "function": Param(str, default="holding", choices=FUNCTIONS),
    "address_base": Param(int, default=0, choices=(0, 1)),
    "max_registers": Param(int, default=125, minval=2, maxval=125),
    "neutral_measured": Param(bool, default=None,  # type: ignore[arg-type]
                              doc="true: current_n_a is measured (4th CT); false: the meter "
                                  "computes it as the vector sum of the phase currents"),
}
ENCODINGS = ("", "pf4q")


def point_params(defaults: Mapping[str, Any]) -> dict[str, Param]:
    return {
        "address": Param(int, minval=0, maxval=65535, doc="register address (see address_base)"),
        "type": Param(str, default="float32", choices=codec.TYPES),
        "scale": Param(float, default=1.0, doc="engineering value = raw * scale"),
        "unit": Param(str, default=""),
        "function": Param(str, default=defaults.get("function", "holding"), choices=FUNCTIONS),
        "word_order": Param(str, default=defaults.get("word_order", "ABCD"),
                            choices=codec.WORD_ORDERS),
        "ct": Param(bool, default=None),  # type: ignore[arg-type]
        "doc": Param(str, default=""),
        "encoding": Param(str, default="", choices=ENCODINGS,
                          doc="pf4q: Schneider four-quadrant PF register (signed PF decoded)"),
    }


@dataclass(frozen=True)
class PointDef:
    """One point of a profile. ``address`` is the wire (0-based protocol) address."""

    name: str
    address: int
    type: str
    scale: float = 1.0
    unit: str = ""
    function: str = "holding"
    word_order: str = "ABCD"
    ct: bool = False
    doc: str = ""
    register: int = -1  # the number as documented (address + address_base)
    encoding: str = ""  # "" plain number, "pf4q" Schneider four-quadrant power factor

    @property
    def count(self) -> int:
        return codec.REGISTER_COUNT[self.type]

    @property
    def end(self) -> int:
        """One past the last register address."""
        return self.address + self.count

    def decode(self, regs: Sequence[int]) -> float:
        """Engineering value (raw * scale) from this point's registers (a ``pf4q`` point:
        the signed IEC power factor)."""
        value = codec.decode(regs, self.type, self.word_order, self.scale)
        return codec.decode_pf_4q(value)[0] if self.encoding == "pf4q" else value

    def encode(self, value: float, quadrant: int = 0) -> list[int]:
        """Registers a device would serve for ``value`` (the inverse of :meth:`decode`);
        ``quadrant`` (1..4, 0 lagging) matters to ``pf4q`` points only."""
        if self.encoding == "pf4q":
            value = codec.encode_pf_4q(value, quadrant)
        return codec.encode(value, self.type, self.word_order, self.scale)


@dataclass(frozen=True)
class Profile:
    """A validated register map."""

    name: str
    file: str
    points: tuple[PointDef, ...]
    description: str = ""
    source: str = ""
    word_order: str = "ABCD"
    function: str = "holding"
    address_base: int = 0
    max_registers: int = 125
    neutral_measured: bool | None = None
    _by_name: Mapping[str, PointDef] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.points})

    def point(self, name: str) -> PointDef:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.points)

    def encode(self, name: str, value: float) -> list[int]:
        """Registers for point ``name`` holding ``value``."""
        return self._by_name[name].encode(value)

    def decode(self, name: str, regs: Sequence[int]) -> float:
        return self._by_name[name].decode(regs)


def bundled_dir() -> Path:
    return Path(str(resources.files("busguard") / "profiles"))


def bundled_names() -> list[str]:
    return sorted(p.stem for p in bundled_dir().glob("*.toml"))


def is_path(name_or_path: str) -> bool:
    return "/" in name_or_path or name_or_path.endswith(".toml") or "\\" in name_or_path


def resolve_profile(name_or_path: str, base_dir: Path | None = None) -> Path | None:
    """The file a ``profile = ...`` value means, or None for an unknown bundled name."""
    if is_path(name_or_path):
        p = Path(name_or_path)
        return p if p.is_absolute() or base_dir is None else base_dir / p
    candidate = bundled_dir() / f"{name_or_path}.toml"
    return candidate if candidate.is_file() else None


# Profiles read, by (file, mtime, size): a site of 64 meters of one model parsed the same file
# 128 times at start (0.2-0.3 s of a restart, twice: the scan and the I/O process build the
# drivers); an edited file has a new mtime or size and is read again (a reload sees it).
# One version per file is kept. A Profile is frozen, so sharing one between drivers is safe.
_LOADED: dict[str, tuple[int, int, Profile]] = {}


def load_profile(name_or_path: str | Path, base_dir: Path | None = None) -> Profile:
    """Load and validate a bundled profile by name (``"generic-pqm"``) or a profile file.

    Raises :class:`ConfigError` with every problem, in the site.toml message format.
    """
    text = str(name_or_path)
    path = resolve_profile(text, base_dir)
    if path is None:
        import difflib
        names = bundled_names()
        close = difflib.get_close_matches(text, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError([ConfigProblem(text, "(profile)", f"no bundled profile named "
                                         f"{text!r}{hint}; bundled: {', '.join(names)}; or give "
                                         f"a path to a .toml file")])
    file = str(path)
    try:
        st = path.stat()
        version = (st.st_mtime_ns, st.st_size)
        cached = _LOADED.get(file)
        if cached is not None and cached[:2] == version:
            return cached[2]
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, "(file)", f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "(file)", f"not UTF-8 text: {exc}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "(syntax)", f"not valid TOML: {exc}")]) from exc
    profile = parse_profile(data, file)
    _LOADED[file] = (version[0], version[1], profile)
    return profile


def parse_profile(data: Mapping[str, Any], file: str = "profile.toml") -> Profile:
    """Validate a parsed profile document (see :func:`load_profile`)."""
    problems: list[ConfigProblem] = []
    for key in data:
        if key not in ("profile", "points"):
            problems.append(ConfigProblem(file, key, f"unknown table {key!r}; valid tables: "
                                          f"points, profile"))
    head = data.get("profile")
    if not isinstance(head, dict):
        problems.append(ConfigProblem(file, "profile", "missing table [profile] with a `name`"))
        head = {}
    sec = Section(file, "profile", head, problems)
    meta = sec.read(PROFILE_PARAMS)
    sec.finish()
    raw_points = data.get("points")
    if not isinstance(raw_points, dict) or not raw_points:
        problems.append(ConfigProblem(file, "points", "expected at least one point table, "
                                      "e.g. [points.current_l1_a] with address and type"))
        raw_points = {}
    base = meta["address_base"] or 0
    params = point_params(meta)
    points: list[PointDef] = []
    for pname, pdata in raw_points.items():
        path = f"points.{pname}"
        if not isinstance(pdata, dict):
            problems.append(ConfigProblem(file, path, "expected a table with address and type"))
            continue
        if not pname or not all(ch.isalnum() or ch == "_" for ch in pname):
            problems.append(ConfigProblem(file, path, f"point name {pname!r} may hold letters, "
                                          f"digits and '_' only"))
            continue
        ps = Section(file, path, pdata, problems)
        v = ps.read(params)
        ps.finish()
        if v["address"] is None:
            continue
        if v["scale"] == 0:
            ps.problem("scale", "got 0.0; expected a non-zero number")
            continue
        wire = v["address"] - base
        count = codec.REGISTER_COUNT.get(v["type"], 2)
        if wire < 0:
            ps.problem("address", f"got {v['address']}; expected >= 1 with address_base = 1")
            continue
        if wire + count > 65536:
            ps.problem("address", f"got {v['address']}; a {v['type']} there runs past register "
                       f"65535")
            continue
        ct = v["ct"] if v["ct"] is not None else v["unit"] in CT_UNITS
        points.append(PointDef(pname, wire, v["type"], v["scale"], v["unit"], v["function"],
                               v["word_order"], bool(ct), v["doc"], v["address"],
                               v["encoding"]))
    if problems:
        raise ConfigError(problems)
    return Profile(meta["name"], file, tuple(points), meta["description"], meta["source"],
                   meta["word_order"], meta["function"], base, meta["max_registers"],
                   meta["neutral_measured"])
