"""Drop-in files: `site.d/*.toml` beside `site.toml`, merged after it.

A plugin package or a site's own tooling adds its devices, blocks and tables in a file of its
own (`/etc/busguard/site.d/50-rack-budget.toml`) instead of editing the site file. The rules:

- the folder is the site file's name with `.d` for its suffix (`site.toml` -> `site.d/`);
  only `*.toml` files in it count, merged in the lexical order of their names (so `10-...`
  before `50-...`);
- arrays of tables (`[[meter]]`, `[[block]]`, ...) are appended: a drop-in adds devices and
  blocks, after the site file's (blocks run in that merged order);
- tables are merged key by key: a drop-in may add a table or keys the earlier files did not
  set; setting a key an earlier file set is an error naming both files (a drop-in adds, it
  never silently overrides);
- each drop-in is read with the site file's limits (size, nesting) and validated with it;
  a problem in a drop-in names the drop-in and its own key path (`meter[0].poll_ms` counts
  from its own first `[[meter]]`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busguard.errors import ConfigError, ConfigProblem


def dropin_dir(site_file: str | Path) -> Path:
    """`site.toml` -> `site.d`, beside it."""
    return Path(site_file).with_suffix(".d")


def dropin_files(site_file: str | Path) -> list[Path]:
    d = dropin_dir(site_file)
    try:
        return sorted(p for p in d.iterdir() if p.suffix == ".toml" and p.is_file())
    except OSError:
        return []


@dataclass
class Provenance:
    """Which file each merged array entry and table key came from."""

    entries: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def locate(self, file: str, key: str) -> tuple[str, str]:
        """The file and key path a problem at ``key`` of the merged site belongs to."""
        m = re.match(r"^([A-Za-z_][\w-]*)\[(\d+)\](.*)$", key)
        if m:
            hit = self.entries.get((m.group(1), int(m.group(2))))
            if hit is not None:
                return hit[0], f"{m.group(1)}[{hit[1]}]{m.group(3)}"
            return file, key
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            owner = self.keys.get(".".join(parts[:n]))
            if owner is not None:
                return owner, key
        return file, key


def merge(base: dict[str, Any], base_file: str, dropins: list[tuple[str, Mapping[str, Any]]]
          ) -> tuple[dict[str, Any], Provenance]:
    """The site file's data with each drop-in merged in order (see the module docstring).
    Raises :class:`ConfigError` for every key two files set."""
    prov = Provenance()
    data: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    owners: dict[str, str] = {}

    def take(into: dict[str, Any], src: Mapping[str, Any], file: str, prefix: str) -> None:
        for k, v in src.items():
            path = f"{prefix}{k}"
            if isinstance(v, list) and v and all(isinstance(x, dict) for x in v) and \
                    (k not in into or isinstance(into[k], list)):
                have = into.setdefault(k, [])
                if not prefix:  # a top-level array of tables: entries keep their file
                    first = sum(1 for (name, _i) in prov.entries if name == k)
                    for i in range(len(v)):
                        prov.entries[(k, first + i)] = (file, i)
                have.extend(v)
            elif isinstance(v, dict) and isinstance(into.get(k, {}), dict):
                owners.setdefault(path, file)
                prov.keys.setdefault(path, file)
                take(into.setdefault(k, {}), v, file, f"{path}.")
            elif k in into:
                problems.append(ConfigProblem(
                    file, path, f"already set by {owners.get(path, base_file)}; a drop-in "
                    f"adds tables, keys and entries, it does not override them (move the "
                    f"setting to one file)"))
            else:
                into[k] = v
                owners[path] = file
                prov.keys[path] = file

    take(data, base, base_file, "")
    for file, d in dropins:
        take(data, d, file, "")
    if problems:
        raise ConfigError(problems)
    return data, prov


def relabel(exc: ConfigError, prov: Provenance) -> ConfigError:
    """The same problems, each naming the file (and local key path) it came from."""
    out = []
    for p in exc.problems:
        file, key = prov.locate(p.file, p.key)
        out.append(ConfigProblem(file, key, p.message))
    return ConfigError(out)


def read_all(site_file: str | Path, read: Callable[[Path], tuple[dict[str, Any], str]]
             ) -> list[tuple[str, dict[str, Any], str]]:
    """(file, data, sha256) of each drop-in of ``site_file``, read with ``read`` (the site
    file's own reader, limits included)."""
    return [(str(p), *read(p)) for p in dropin_files(site_file)]
