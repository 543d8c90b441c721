"""The one way a site file becomes a validated site: used by run, check, apply, status, the
I/O process, replay, recalibrate and the test fixtures.

The file is read and parsed once (:func:`busguard.config.site.read_document`); its
``[plugins] disabled`` list is taken from that parse before any plugin loads, so the plugin
manager is built once, with the disabled plugins blocked, and the whole file is then validated
against the types the remaining plugins register.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pluggy

from busguard.config.site import (
    Document,
    SiteConfig,
    disabled_plugins,
    parse_document,
    read_document,
)
from busguard.plugins import build_plugin_manager, collect_types
from busguard.registry import TypeRegistry


@dataclass(frozen=True)
class Loaded:
    """A validated site with the plugin manager and the types it was validated against."""

    site: SiteConfig
    pm: pluggy.PluginManager
    registry: TypeRegistry


def load_types(disabled: Iterable[str] = (), extra: Iterable[object] = ()
               ) -> tuple[pluggy.PluginManager, TypeRegistry]:
    """A fresh plugin manager (``disabled`` blocked, ``extra`` registered) and its types."""
    pm = build_plugin_manager(disabled=disabled, extra=extra)
    return pm, collect_types(pm)


def load(source: str | Path | Document, extra: Iterable[object] = ()) -> Loaded:
    """Read (unless given a :class:`Document`), validate and type a site file.

    Raises :class:`busguard.errors.ConfigError` with every problem found, and
    :class:`busguard.errors.PluginError` when a plugin cannot load.
    """
    doc = source if isinstance(source, Document) else read_document(source)
    pm, registry = load_types(disabled=disabled_plugins(doc.data), extra=extra)
    return Loaded(parse_document(doc, registry), pm, registry)
