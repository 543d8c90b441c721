"""Building a plugin manager: a fresh one per runtime (and per test), never a global one.

Built-ins and third-party plugins are found the same way, through the ``busguard`` entry-point
group, so a third-party block is a first-class citizen.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from busguard import PROJECT, hookspecs
from busguard.errors import PluginError
from busguard.registry import TypeRegistry


def build_plugin_manager(disabled: Iterable[str] = (), extra: Iterable[object] = (),
                         entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with the hookspecs, the entry-point plugins and ``extra`` objects.

    :param disabled: plugin (entry-point) names to block, from ``[plugins] disabled``.
    :param extra: plugin objects registered directly (tests, embedding).
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in disabled:
        pm.set_blocked(name)
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(PROJECT)
        except Exception as exc:  # a broken third-party plugin must say who it is
            raise PluginError(f"loading plugins of entry-point group {PROJECT!r} failed: "
                              f"{type(exc).__name__}: {exc}") from exc
    for obj in extra:
        pm.register(obj)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    return pm


def collect_types(pm: pluggy.PluginManager) -> TypeRegistry:
    """Ask every plugin to register its types; names each plugin in conflict messages."""
    registry = TypeRegistry()
    for plugin in pm.get_plugins():
        impl = getattr(plugin, "busguard_register_types", None)
        if impl is None or pm.is_blocked(pm.get_name(plugin) or ""):
            continue
        registry.current_plugin = pm.get_name(plugin) or repr(plugin)
        impl(registry=registry)
    registry.current_plugin = ""
    return registry


def list_plugins(pm: pluggy.PluginManager) -> list[dict[str, str]]:
    """Names and distributions of the loaded plugins, for `busguard version --json`."""
    out = []
    dists = {id(p): d for p, d in pm.list_plugin_distinfo()}
    for plugin in pm.get_plugins():
        dist = dists.get(id(plugin))
        out.append({"name": pm.get_name(plugin) or "?",
                    "distribution": f"{dist.project_name} {dist.version}" if dist else ""})
    return out
