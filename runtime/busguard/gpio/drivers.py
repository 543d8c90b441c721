"""GPIO drivers: the breaker driver ``gpio`` (LED in, shunt trip out) and ``gpio_relay``.

Both register their lines with the site's one :class:`GpioService` (one I/O thread), built
from the shared ``[gpio]`` table on first use. ``apply`` only stores the wish; writes happen
in the GPIO thread (on change, every ``refresh_ms``, each read back and verified).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from busguard.annunciator import ANNUNCIATOR_PARAMS
from busguard.config.params import Param
from busguard.config.site import DeviceConfig, SiteConfig
from busguard.driver import Driver, DriverContext
from busguard.errors import ConfigError, DriverError
from busguard.gpio.backends import make_backend
from busguard.gpio.led import TIMING_PARAMS, LedDecoder, LedReading, LedTiming
from busguard.gpio.service import GpioService, OutputChannel
from busguard.image import ImageWriter, PointSpec, Quality

log = logging.getLogger("busguard.gpio")

SERVICE_KEY = "gpio.service"
DEFAULT_PATTERNS = {"solid": "overcurrent trip", "2-blink": "ground fault"}
PUBLISH_S = 0.2  # the LED point is rewritten at least this often (keeps it fresh)
LED_MAX_AGE_S = 1.0
_PATTERN_RE = re.compile(r"^(off|solid|([0-9]+)-blink)$")


def gpio_service(ctx: DriverContext) -> GpioService:
    """The site's GPIO service (built from [gpio] on first use, shared by all GPIO drivers)."""
    site = ctx.site

    def build() -> GpioService:
        backends = ctx.registry.gpio_backends if ctx.registry is not None else {}
        return GpioService(make_backend(site.sections["gpio"], site.resolve,
                                        backends=backends))

    svc = ctx.shared(SERVICE_KEY, build)
    assert isinstance(svc, GpioService)
    return svc


def _line_param(doc: str, required: bool = True) -> Param:
    return Param(int, minval=0, maxval=1023, doc=doc, **({} if required else {"default": None}))


class _GpioDevice(Driver):
    """What both GPIO drivers do with the site's GPIO service: claim lines (released again if
    a claim fails), hand the output ``out_name`` to it, publish the output's read-back into
    ``state_point`` and release the lines on stop."""

    out_name = ""
    state_point = ""

    def __init__(self, config: DeviceConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        self._image: ImageWriter | None = None
        self._service: GpioService | None = None
        self._chan: OutputChannel | None = None

    def _attach(self, ctx: DriverContext, claim: Callable[[GpioService], None]) -> None:
        self._image = ctx.image
        svc = gpio_service(ctx)
        try:
            claim(svc)
        except (ValueError, DriverError) as exc:  # e.g. the line is used by another device
            svc.remove_owner(self.name)
            if isinstance(exc, DriverError):
                raise
            raise DriverError(f"{self.config.path}: {exc}") from exc
        self._service = svc
        svc.start()

    def _on_output(self, chan: OutputChannel) -> None:
        if self._image is None:
            return
        if chan.readback is not None and chan.quality is not Quality.NOT_CONNECTED:
            self._image.write(self.state_point, float(chan.readback), chan.quality)
        else:
            self._image.set_quality((self.state_point,), chan.quality)

    def apply(self, outputs: Mapping[str, float]) -> None:
        if self._chan is not None and self._service is not None and self.out_name in outputs:
            self._service.set_output(self._chan, outputs[self.out_name])

    def stop(self) -> None:
        if self._service is not None:
            self._service.remove_owner(self.name)
            self._service = None


class GpioBreaker(_GpioDevice):
    """A breaker seen through its handle LED (and tripped through its shunt-trip coil)."""

    type_name = "gpio"
    kind = "breaker"
    default_poll_ms = 10.0
    params: ClassVar[Mapping[str, Param]] = {
        "led_line": _line_param("GPIO line (chip offset / BCM number) of the LED sensor"),
        "led_active_low": Param(bool, default=False, doc="the LED input reads low when lit"),
        "sample_ms": Param(float, default=10.0, minval=1.0, maxval=200.0, unit="ms",
                           doc="LED sampling period (in the GPIO thread)"),
        "patterns": Param(dict, default=DEFAULT_PATTERNS,
                          doc="pattern -> meaning: keys 'off', 'solid' or 'N-blink'"),
        "shunt_trip_line": _line_param("GPIO line driving the shunt-trip coil relay",
                                       required=False),
        "shunt_trip_active_low": Param(bool, default=False),
        "shunt_refresh_ms": Param(float, default=1000.0, minval=10.0, maxval=60_000.0,
                                  unit="ms", doc="rewrite and read back the shunt-trip line"),
        "rating_a": Param(float, default=None, above=0.0, unit="A",
                          doc="rated ampacity of the breaker / busway run (load alarms)"),
        **TIMING_PARAMS,
    }

    @classmethod
    def declare_points(cls, config: DeviceConfig, site: SiteConfig) -> list[PointSpec]:
        p = config.params
        problems = [config.problem(key, msg) for key, msg in
                    cls._check(p)]
        if problems:
            raise ConfigError(problems)
        pts = [PointSpec(f"{config.name}.led", source=config.name, max_age_s=LED_MAX_AGE_S,
                         doc="LED pattern: 0 off, 1 solid (overcurrent trip), 2 two-blink "
                             "(ground fault), N N-blink; BAD when unclassifiable")]
        if p["shunt_trip_line"] is not None:
            pts.append(PointSpec(f"{config.name}.shunt_trip_state", source=config.name,
                                 max_age_s=3 * p["shunt_refresh_ms"] / 1000, retained=False,
                                 doc="shunt-trip line as read back (BAD: differs from command)"))
        return pts

    @classmethod
    def _check(cls, p: Mapping[str, Any]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for key, meaning in dict(p["patterns"]).items():
            m = _PATTERN_RE.match(str(key))
            if not m:
                out.append((f"patterns.{key}", "unknown pattern; expected 'off', 'solid' or "
                            "'N-blink' (N from 2 to max_blinks), e.g. '2-blink'"))
            elif m.group(2) and not 2 <= int(m.group(2)) <= p["max_blinks"]:
                out.append((f"patterns.{key}", f"N-blink needs 2 <= N <= max_blinks "
                            f"({p['max_blinks']}); a single blink has no code ('1' is solid)"))
            if not isinstance(meaning, str):
                out.append((f"patterns.{key}", f"got {meaning!r}; expected a string meaning"))
        out += [("led_timing", msg) for msg in LedTiming.from_params(p).problems()]
        if p["shunt_trip_line"] is not None and p["shunt_trip_line"] == p["led_line"]:
            out.append(("shunt_trip_line", f"got {p['shunt_trip_line']}; it is also the "
                        f"led_line"))
        return out

    def __init__(self, config: DeviceConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        p = config.params
        self.patterns = {str(k): str(v) for k, v in dict(p["patterns"]).items()}
        self.decoder = LedDecoder(LedTiming.from_params(p))
        self.led_point = f"{self.name}.led"
        self.shunt_output = self.out_name = f"{self.name}.shunt_trip"
        self.state_point = f"{self.name}.shunt_trip_state"
        self.reading: LedReading = self.decoder.last
        self._last_pub = -1e18
        self._pub_code: int | str | None = "unset"
        self.samples = 0
        self.read_errors = 0
        self.changes = 0

    def meaning(self, reading: LedReading) -> str:
        return self.patterns.get(reading.label, "")

    def consumes(self) -> tuple[str, ...]:
        return (self.shunt_output,) if self.config.params["shunt_trip_line"] is not None else ()

    def start(self, ctx: DriverContext) -> None:
        p = self.config.params

        def claim(svc: GpioService) -> None:
            svc.add_input(self.name, p["led_line"], p["led_active_low"], p["sample_ms"] / 1000,
                          self._on_sample)
            if p["shunt_trip_line"] is not None:
                self._chan = svc.add_output(self.name, self.shunt_output, p["shunt_trip_line"],
                                            p["shunt_trip_active_low"],
                                            p["shunt_refresh_ms"] / 1000, self._on_output)

        self._attach(ctx, claim)

    def _on_sample(self, t: float, level: int | None) -> None:
        img = self._image
        if img is None:
            return
        if level is None:
            self.read_errors += 1
            img.set_quality((self.led_point,), Quality.NOT_CONNECTED)
            return
        self.samples += 1
        self.decoder.feed(t, level)
        reading = self.decoder.classify(t)
        if reading != self.reading:
            self.changes += 1
            what = self.meaning(reading)
            log.info("%s: LED shows %s%s%s", self.name, reading.label,
                     f" ({what})" if what else "", f": {reading.why}" if reading.why else "")
            self.reading = reading
        if reading.kind == "pending":
            return
        code = reading.code
        if code == self._pub_code and t - self._last_pub < PUBLISH_S:
            return
        self._pub_code, self._last_pub = code, t
        if code is None:
            img.set_quality((self.led_point,), Quality.BAD)
        else:
            img.write(self.led_point, float(code), Quality.GOOD)

    def stats(self) -> dict[str, Any]:
        r = self.reading
        out: dict[str, Any] = {"led": r.label, "led_code": r.code, "meaning": self.meaning(r),
                               "samples": self.samples, "read_errors": self.read_errors,
                               "pattern_changes": self.changes,
                               "rating_a": self.config.params["rating_a"]}
        if r.why:
            out["why"] = r.why
        if self._chan is not None:
            out["shunt_trip"] = self._chan.stats()
        return out


class GpioRelay(_GpioDevice):
    """One output (e.g. ``relay.alarm``) on one GPIO line, with read-back verification."""

    type_name = "gpio_relay"
    kind = "output"
    params: ClassVar[Mapping[str, Param]] = {
        "line": _line_param("GPIO line (chip offset / BCM number) driving the relay"),
        "output": Param(str, doc="output name this relay shows, e.g. 'relay.alarm'"),
        "active_low": Param(bool, default=False, doc="the relay energises on a low level"),
        "refresh_ms": Param(float, default=1000.0, minval=10.0, maxval=60_000.0, unit="ms",
                            doc="rewrite and read back the line this often"),
        "feedback_line": _line_param("optional input wired to the relay's auxiliary contact: "
                                     "verify against it instead of the output line",
                                     required=False),
        "feedback_active_low": Param(bool, default=False),
        "feedback_settle_ms": Param(float, default=50.0, minval=0.0, maxval=5000.0, unit="ms",
                                    doc="time the contact may take to follow a write"),
        **ANNUNCIATOR_PARAMS,
    }

    @classmethod
    def declare_points(cls, config: DeviceConfig, site: SiteConfig) -> list[PointSpec]:
        p = config.params
        if p["feedback_line"] is not None and p["feedback_line"] == p["line"]:
            raise ConfigError([config.problem("feedback_line",
                                              f"got {p['feedback_line']}; it is also the line")])
        return [PointSpec(f"{config.name}.state", source=config.name, retained=False,
                          max_age_s=3 * p["refresh_ms"] / 1000,
                          doc="relay as read back (line or feedback contact); BAD when it "
                              "differs from the command")]

    def __init__(self, config: DeviceConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        self.output = self.out_name = str(config.params["output"])
        self.state_point = f"{self.name}.state"

    def consumes(self) -> tuple[str, ...]:
        return (self.output,)

    def start(self, ctx: DriverContext) -> None:
        p = self.config.params
        fb = None if p["feedback_line"] is None else (p["feedback_line"],
                                                      p["feedback_active_low"])

        def claim(svc: GpioService) -> None:
            self._chan = svc.add_output(self.name, self.output, p["line"], p["active_low"],
                                        p["refresh_ms"] / 1000, self._on_output, feedback=fb,
                                        settle_s=p["feedback_settle_ms"] / 1000)

        self._attach(ctx, claim)

    def stats(self) -> dict[str, Any]:
        return self._chan.stats() if self._chan is not None else {"line": self.config.params[
            "line"], "quality": "not-connected"}


def register_types(registry: Any) -> None:
    """Breaker ``gpio`` (the default breaker driver), output ``gpio_relay``, table [gpio]."""
    from busguard.gpio.backends import BUILTIN_BACKENDS, GPIO_SECTION_PARAMS

    registry.add_driver(GpioBreaker, default=True)
    registry.add_driver(GpioRelay)
    registry.add_section("gpio", GPIO_SECTION_PARAMS,
                         doc="GPIO backend for breaker LEDs and relays: backend, chip, mock_dir")
    for name, factory in BUILTIN_BACKENDS.items():  # a third party adds its own the same way
        registry.add_gpio_backend(name, factory)
