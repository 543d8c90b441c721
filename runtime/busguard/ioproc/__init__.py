"""``[scan] io = "process"``: the input drivers and the DCIM's server in a second process.

Why: in one interpreter the scan thread shares the GIL with the Modbus pollers and the DCIM's
server. Under load (64 meters, 8 DCIM clients reading the whole map at 10 Hz, on 2 cores) a
poller thread holding the GIL is preempted by the OS while the scan thread waits for it,
SCHED_FIFO or not, and the scan is late by milliseconds (docs/benchmarks.md). With the pollers
and the server in a child process, nothing the scan waits for is held by a thread of normal
priority.

The modules:

- :mod:`.supervisor` (scan process): starts the I/O process, restarts it when it ends, moves
  the link's messages at the two safe points of a cycle, raises ``BG-IO-PROCESS``.
- :mod:`.process` (the I/O process, ``python -m busguard.ioproc``): loads the site, builds
  only the drivers that declare ``io_process_ok`` and the publishers that do (no blocks, no
  runtime), starts them, then only moves messages.
- :mod:`.link`: the wire (message kinds, non-blocking sends, the drivers' image writer,
  :func:`~.link.drain`); :mod:`.frames`: the layout and the frame, the two things the scan
  process sends; :mod:`.register_image`: the DCIM's register image in the I/O process.

The contract: what crosses the link, in which form, and when.

==========  ============  ==================================================================
message     direction     form, and when
==========  ============  ==================================================================
``L``       scan -> io    :class:`~.frames.Layout` (pickled, zlib): the config hash, the point
                          specs in image order, the devices and the blocks' outputs. Once
                          per I/O process, first. Both sides index points by this layout;
                          the I/O process builds the register map from it, not from blocks.
``W``       io -> scan    driver readings: ``<cdd`` (kind, t_mono, t_utc) then ``<IdB``
                          (point index, float64 value, quality) per point; one message per
                          ``write_many`` call, with the driver's own timestamps.
``Q``       io -> scan    quality only: ``<cdB`` (kind, t_mono, quality) then ``<I`` per
                          point (a device that stopped answering, a 0x02 block).
``D``       io -> scan    "a DCIM client read the newest frame": send the next one. Empty.
``F``       scan -> io    one scan's frame (:func:`~.frames.frame_to_bytes`): the snapshot's
                          four arrays as raw bytes plus outputs, alarm summary, faulted
                          blocks, latched breakers, counters. Only after a ``D`` (and at
                          most every ``[modbus_server] refresh_ms``): no reads, no frames.
``S``       io -> scan    driver and publisher statistics (pickled dict), once a second.
``R``       io -> scan    ready (pickled dict: pid, drivers, bound listeners) or
                          ``{"error": ...}``; once per start.
==========  ============  ==================================================================

So a meter's value crosses twice: in as a 13-byte ``W`` record, applied to the one
:class:`~busguard.image.ProcessImage` (the scan process owns the image, retained state,
ageing, min/max windows, recording and every decision), and back out inside its scan's frame
(25 bytes a point, only while a DCIM client reads); the I/O process turns the frame into
register bytes, once per frame. docs/architecture.md ("The I/O process") says why this is
messages and not a shared-memory image, with the measurement.

Nothing on the link is ever waited for by the scan: sends are non-blocking, a full buffer
drops the message and counts it (the points age to stale, as with a quiet meter).

Shared with the scan side: :data:`STATS_EVERY_S` and :data:`SWITCH_INTERVAL_S` below.
"""

from __future__ import annotations

# How often statistics are refreshed: the scan process writes its scan.* points, the I/O
# process sends its driver and server statistics (``S``).
STATS_EVERY_S = 1.0
# The interpreter's switch interval in both processes (5 ms by default): a thread waiting for
# the GIL asks for it after this long. In the scan process it bounds how long the scan waits
# behind another thread (the retained-state writer, the status writer, local drivers); in the
# I/O process, how long a DCIM request waits behind a busy poller.
SWITCH_INTERVAL_S = 0.0005
