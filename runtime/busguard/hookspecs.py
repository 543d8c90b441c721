"""The whole contract between busguard and its plugins.

Hooks register *types*; site.toml creates the *objects*. The scan calls blocks and drivers
directly, in site.toml order, never through hook call order (pluggy calls hooks last-registered
first and entry points load in arbitrary order). The other hooks are for observers: they are
called from the runtime, after the fact, and an observer that raises is logged, not fatal.

Implement hooks with ``from busguard import hookimpl`` and expose the module (or object) under
the ``busguard`` entry-point group of your distribution. See docs/plugins.md.

The types a plugin registers have their own contracts, in their base classes:

- :class:`busguard.block.Block`: ``type_name``, ``params`` (validated from site.toml; the block
  reads them as ``self.p["name"]``, frozen, every default applied), ``failsafe_policy`` (what it
  does when an input is stale or bad, and what it forces when it faults) and ``codes`` (every
  alarm code it raises), both shown in docs/blocks.md; ``inputs()``, ``outputs()`` with their
  fail-safe values, ``points()``, ``scan()``, ``state()``/``restore()``, and for a block that
  protects breakers ``map_breakers()`` (trip output and reset command, once) and
  ``breakers()`` (latched, cause and trip time, now): the only things the register map shows
  about a breaker.
- :class:`busguard.driver.Driver` and :class:`busguard.publisher.Publisher`.
- Observers: ``registry.add_observer(name, factory)``; ``factory(runtime)`` returns an object
  whose ``@hookimpl`` methods implement the observer hooks below for that runtime only.
- GPIO backends: ``registry.add_gpio_backend(name, factory)``; ``factory(section, resolve,
  ticks)`` returns a :class:`busguard.gpio.base.PinBackend` for ``[gpio] backend = name``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from busguard import PROJECT

if TYPE_CHECKING:
    from busguard.alarms import AlarmEdge
    from busguard.registry import TypeRegistry
    from busguard.runtime import Runtime
    from busguard.scan import CycleResult

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def busguard_register_types(registry: TypeRegistry) -> None:
    """Register block, driver, publisher and shared-section types.

    Called once when a plugin manager is built, before site.toml is read, so the types'
    parameter schemas validate the file.

    :param registry: call ``registry.add_block(cls)``, ``registry.add_driver(cls)``,
        ``registry.add_publisher(cls)``, ``registry.add_section(name, params)``,
        ``registry.add_observer(name, factory)`` or ``registry.add_gpio_backend(name,
        factory)``. Conflicting names are refused, naming both plugins.
    """


@hookspec
def busguard_startup(runtime: Runtime) -> None:
    """Called once the site is built, before publishers and drivers start and before the
    first scan. Retained state is restored here, so the DCIM sees last known values at once
    (after a reload the old runtime's state was already taken over: ``Runtime.handover_from``).

    :param runtime: the running :class:`busguard.runtime.Runtime` (site, image, alarms).
    """


@hookspec
def busguard_scan_complete(runtime: Runtime, result: CycleResult) -> None:
    """Called after every scan cycle, from the scan thread. Must return at once.

    :param runtime: the running runtime.
    :param result: the cycle's number, time, outputs and alarm edges.
    """


@hookspec
def busguard_alarm_raised(runtime: Runtime, edge: AlarmEdge) -> None:
    """Called once when an alarm starts (not once per scan).

    :param runtime: the running runtime.
    :param edge: the raise edge; ``edge.alarm`` holds block, code, severity, message, values.
    """


@hookspec
def busguard_alarm_cleared(runtime: Runtime, edge: AlarmEdge) -> None:
    """Called once when an alarm ends (its condition went and, if latching, was acknowledged).

    :param runtime: the running runtime.
    :param edge: the clear edge.
    """


@hookspec
def busguard_fault(runtime: Runtime, source: str, error: BaseException,
                   details: dict[str, Any]) -> None:
    """Called when a block or driver faults (raised an exception); the scan goes on.

    :param runtime: the running runtime.
    :param source: the block or driver name.
    :param error: the exception.
    :param details: what was isolated and forced (e.g. fail-safe outputs).
    """


@hookspec
def busguard_command_written(runtime: Runtime, point: str, value: float, client: str,
                             t_utc: float) -> None:
    """Called when a client's write to a command point (an acknowledgement, a trip reset, a
    job start) has been accepted, before the scan acts on it: the audit trail of who did what
    from where (the fault log writes one ``command`` line). Called on the side that serves the
    client (the I/O process with ``[scan] io = "process"``); must not block.

    :param runtime: the runtime serving the client.
    :param point: the command point written, e.g. ``brk-a1.cmd_reset``.
    :param value: the value written.
    :param client: who wrote it: the client's address as the server saw it.
    :param t_utc: when the write was accepted (UTC epoch seconds).
    """


@hookspec
def busguard_shutdown(runtime: Runtime) -> None:
    """Called once on a clean stop, after the last scan and before drivers stop.

    :param runtime: the runtime that is stopping.
    """
