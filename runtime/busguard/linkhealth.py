"""One home for a polled device's link health: the ``comm_*`` points and the up/down rule.

A meter (:mod:`busguard.modbus.driver`) and a peer busguard (:mod:`busguard.peer.driver`) are
both devices polled over a link that can stop answering. What that means for the image is one
idea, kept here once so the two cannot drift apart:

- the health points' names and units, and their :class:`PointSpec`;
- the values written from the link's :class:`CommStats` after every poll;
- the rule "``loss_limit`` requests in a row lost -> down: the device's points
  NOT_CONNECTED, one log line; an answer again -> up, one log line".

Each driver keeps what is its own: the log lines' wording (operators and tests grep it, so it
is passed in, never rewritten here), how old the health points may get, which of them it
declares (a peer has no CRC errors, so no ``comm_error_pct``, and its map block stays as it
is), what ``comm_ok`` means before the first answer, and what else changes on a transition
(the meter's backoff and refused blocks, the peer's ``peer_state``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from busguard.image import ImageWriter, PointSpec, Quality
from busguard.modbus.commstats import CommStats

COMM_POINTS = ("comm_ok", "comm_latency_p50_ms", "comm_latency_p99_ms", "comm_loss_pct",
               "comm_error_pct", "comm_poll_ms")
COMM_UNITS = {"comm_ok": "", "comm_latency_p50_ms": "ms", "comm_latency_p99_ms": "ms",
              "comm_loss_pct": "%", "comm_error_pct": "%", "comm_poll_ms": "ms"}
UP = "up"
DOWN = "down"
_GOOD = Quality.GOOD


def nan0(x: float) -> float:
    """0.0 for NaN (nothing measured yet): a health point is always a number."""
    return 0.0 if math.isnan(x) else x


def _checked(points: Iterable[str]) -> tuple[str, ...]:
    pts = tuple(points)
    unknown = [p for p in pts if p not in COMM_UNITS]
    if unknown:
        raise ValueError(f"no link health point {', '.join(unknown)}; known: "
                         f"{', '.join(COMM_POINTS)}")
    return pts


def comm_specs(device: str, max_age_s: float, doc: str,
               points: Iterable[str] = COMM_POINTS) -> list[PointSpec]:
    """The ``{device}.comm_*`` points a driver declares (not retained: they describe now)."""
    return [PointSpec(f"{device}.{p}", source=device, unit=COMM_UNITS[p], max_age_s=max_age_s,
                      retained=False, doc=doc) for p in _checked(points)]


@dataclass(frozen=True)
class Wording:
    """A driver's log lines, ``%(key)s`` formats over: ``device``, ``where`` (the link),
    ``lost`` (requests lost in a row), ``outage`` (requests lost since the last clean poll),
    ``last`` (the last loss's error) and the driver's own ``context`` keys.
    ``first_loss`` (INFO, optional) is said at the first loss of a streak while up."""

    down: str
    up: str
    first_loss: str = ""


class LinkHealth:
    """A polled device's link: its :class:`CommStats`, up/down state and health items.

    The driver reports each lost request with :meth:`lost` and each poll's outcome with
    :meth:`update` (a peer, whose polls stop at the first loss, reports after each request);
    :meth:`items` gives the health points' values to write with the poll's own.
    """

    def __init__(self, device: str, loss_limit: int, wording: Wording, log: logging.Logger,
                 data_names: Callable[[], Iterable[str]], where: Callable[[], str], *,
                 points: Iterable[str] = COMM_POINTS, context: Mapping[str, Any] | None = None
                 ) -> None:
        self.device = device
        self.loss_limit = loss_limit
        self.wording = wording
        self.log = log
        self.context = dict(context or {})  # the wording's own keys
        self.where = where
        # the device's points, NOT_CONNECTED when the link goes down; asked then, not now:
        # a driver may rename its points after this (the RTD probe's temp_c)
        self.data_names = data_names
        self.comm = CommStats()
        self.down = False
        self.answered_once = False
        self.outage_lost = 0
        self.last_error = ""
        self.points = _checked(points)
        self.names = tuple(f"{device}.{p}" for p in self.points)
        self._pick = tuple(COMM_POINTS.index(p) for p in self.points)
        self._all = self.points == COMM_POINTS  # the meter's case, once a poll: no picking

    def lost(self, kind: str, why: str) -> None:
        """One request lost: ``kind`` a :mod:`commstats` outcome (timeout, disconnect, crc)."""
        self.comm.record(kind)
        self.outage_lost += 1
        self.last_error = why
        if self.wording.first_loss and self.comm.consecutive_lost == 1 and not self.down:
            self._say(logging.INFO, self.wording.first_loss)

    def update(self, answered: bool, lost: bool, image: ImageWriter) -> str:
        """Apply the up/down rule after a poll that got an answer and/or lost requests;
        :data:`UP` or :data:`DOWN` when the link changed state (said once), else ``""``."""
        change = ""
        if answered and self.down:
            self.down = False
            self._say(logging.WARNING, self.wording.up)
            self.outage_lost = 0
            change = UP
        elif lost and not answered and not self.down and \
                self.comm.consecutive_lost >= self.loss_limit:
            self.down = True
            image.set_quality(self.data_names(), Quality.NOT_CONNECTED)
            self._say(logging.WARNING, self.wording.down)
            change = DOWN
        if answered and not lost:
            self.outage_lost = 0
        self.answered_once = self.answered_once or answered
        return change

    def items(self, ok: bool, poll_ms: float) -> list[tuple[str, float, Quality]]:
        """(name, value, GOOD) of the declared health points; ``ok`` is ``comm_ok``."""
        c = self.comm
        values = (1.0 if ok else 0.0, nan0(c.latency_ms(50)), nan0(c.latency_ms(99)),
                  c.loss_pct(), c.error_pct(), poll_ms)
        if self._all:
            return list(zip(self.names, values, repeat(_GOOD)))
        return [(n, values[i], _GOOD) for n, i in zip(self.names, self._pick, strict=True)]

    def _say(self, level: int, fmt: str) -> None:
        self.log.log(level, fmt, {**self.context, "device": self.device, "where": self.where(),
                                  "lost": self.comm.consecutive_lost,
                                  "outage": self.outage_lost, "last": self.last_error})
