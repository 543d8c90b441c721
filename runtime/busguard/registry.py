"""The registry plugins fill through ``busguard_register_types``: type name -> class."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from busguard.block import Block
from busguard.config.params import Param
from busguard.driver import Driver
from busguard.errors import PluginError
from busguard.publisher import Publisher

if TYPE_CHECKING:
    from busguard.gpio.base import PinBackend
    from busguard.runtime import Runtime

#: builds one GPIO backend from the validated [gpio] table and the site's path resolver
GpioBackendFactory = Callable[..., "PinBackend"]

DEVICE_KINDS = ("meter", "probe", "breaker", "output")


@dataclass(frozen=True)
class SharedSection:
    """A top-level table shared by several drivers, e.g. ``[gpio]`` or ``[[rs485]]``."""

    name: str
    params: Mapping[str, Param]
    many: bool = False
    doc: str = ""
    keyed: bool = False  # many=True: entries have a unique `name`


@dataclass
class TypeRegistry:
    """Every type the loaded plugins offer."""

    blocks: dict[str, type[Block]] = field(default_factory=dict)
    drivers: dict[str, dict[str, type[Driver]]] = field(
        default_factory=lambda: {k: {} for k in DEVICE_KINDS})
    default_drivers: dict[str, str] = field(default_factory=dict)
    publishers: dict[str, type[Publisher]] = field(default_factory=dict)
    sections: dict[str, SharedSection] = field(default_factory=dict)
    observers: dict[str, Callable[[Runtime], Any]] = field(default_factory=dict)
    gpio_backends: dict[str, GpioBackendFactory] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    current_plugin: str = ""

    def _claim(self, key: str) -> None:
        if key in self.origin:
            raise PluginError(f"{key} is registered twice: by {self.origin[key]} and by "
                              f"{self.current_plugin or 'an unnamed plugin'}")
        self.origin[key] = self.current_plugin or "?"

    def add_block(self, cls: type[Block]) -> None:
        if not cls.type_name:
            raise PluginError(f"block class {cls.__qualname__} has no type_name")
        self._claim(f"block type {cls.type_name!r}")
        self.blocks[cls.type_name] = cls

    def add_driver(self, cls: type[Driver], default: bool = False) -> None:
        if cls.kind not in DEVICE_KINDS:
            raise PluginError(f"driver class {cls.__qualname__} has kind {cls.kind!r}; "
                              f"expected one of {', '.join(DEVICE_KINDS)}")
        if not cls.type_name:
            raise PluginError(f"driver class {cls.__qualname__} has no type_name")
        self._claim(f"{cls.kind} driver {cls.type_name!r}")
        self.drivers[cls.kind][cls.type_name] = cls
        if default:
            self.default_drivers[cls.kind] = cls.type_name

    def add_publisher(self, cls: type[Publisher]) -> None:
        if not cls.section:
            raise PluginError(f"publisher class {cls.__qualname__} has no section")
        self._claim(f"section [{cls.section}]")
        self.publishers[cls.section] = cls

    def add_section(self, name: str, params: Mapping[str, Param], many: bool = False,
                    doc: str = "", keyed: bool = False) -> None:
        self._claim(f"section [{name}]")
        self.sections[name] = SharedSection(name, dict(params), many, doc, keyed)

    def add_observer(self, name: str, factory: Callable[[Runtime], Any]) -> None:
        """An observer made for each runtime: ``factory(runtime)`` returns an object whose
        ``@hookimpl`` methods (startup, scan complete, alarms, fault, shutdown) the runtime's
        plugin manager registers under ``name`` (blocked by ``[plugins] disabled = [name]``)."""
        self._claim(f"observer {name!r}")
        self.observers[name] = factory

    def add_gpio_backend(self, name: str, factory: GpioBackendFactory) -> None:
        """A ``[gpio] backend = name``: ``factory(section, resolve, ticks)`` builds it from the
        validated [gpio] table, the site's path resolver and the monotonic clock."""
        self._claim(f"gpio backend {name!r}")
        self.gpio_backends[name] = factory

    def choices(self, kind: str) -> tuple[str, ...]:
        """Names registered of a kind a :class:`Param` may take its choices from."""
        if kind == "gpio_backend":
            return tuple(self.gpio_backends)
        raise PluginError(f"no registered kind {kind!r} to choose from")
