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
    """Ask every plugin to register its types; names each plugin in conflict messages.

    The hook is called through pluggy, one plugin at a time (``subset_hook_caller``), so the
    registry knows who registered what."""
    registry = TypeRegistry()
    impls = pm.hook.busguard_register_types.get_hookimpls()
    for impl in impls:
        registry.current_plugin = impl.plugin_name
        others = [i.plugin for i in impls if i is not impl]
        pm.subset_hook_caller("busguard_register_types", others)(registry=registry)
    registry.current_plugin = ""
    return registry


def register_observers(pm: pluggy.PluginManager, registry: TypeRegistry,
                       runtime: object, io_process: bool = False) -> list[object]:
    """Make each registered observer type's object for ``runtime`` and register it (unless
    its name is blocked or already registered); returns them. ``io_process``: only the
    observer types that also run in the I/O process (``io_process = True`` on the type, e.g.
    the fault log, for the audit lines of the command writes served there), for its
    :class:`~busguard.ioproc.process.RemoteContext`."""
    made = []
    for name, factory in registry.observers.items():
        if io_process and not getattr(factory, "io_process", False):
            continue
        if not pm.is_blocked(name) and pm.get_plugin(name) is None:
            obj = factory(runtime)
            pm.register(obj, name=name)
            made.append(obj)
    return made


def list_plugins(pm: pluggy.PluginManager) -> list[dict[str, str]]:
    """Names and distributions of the loaded plugins, for `busguard version --json`."""
    out = []
    dists = {id(p): d for p, d in pm.list_plugin_distinfo()}
    for plugin in pm.get_plugins():
        dist = dists.get(id(plugin))
        out.append({"name": pm.get_name(plugin) or "?",
                    "distribution": f"{dist.project_name} {dist.version}" if dist else ""})
    return out
