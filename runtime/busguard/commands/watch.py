"""`busguard status --watch`: the live view (:mod:`busguard.watch`) of a unit over its map.

Reads the whole map once per ``--interval`` with the same client as ``busguard status`` and
redraws in the terminal's alternate screen. A unit that stops answering keeps its last frame
with the error and the time of the last good read; the view reconnects by itself.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from busguard.errors import BusguardError


def site_layout(site_arg: str | None) -> list[dict[str, Any]] | None:
    """The site file's tap-offs (ratings, probes on each joint), when one is at hand."""
    from busguard.loader import load
    from busguard.web.view import tapoffs

    path = Path(site_arg) if site_arg else Path("site.toml")
    if not path.is_file():
        return None
    try:
        return tapoffs(load(path).site)
    except BusguardError:
        return None


def watch(args: argparse.Namespace, port: int) -> int:
    from rich.console import Console
    from rich.live import Live

    from busguard.commands.status import connect, reader
    from busguard.northbound.reader import read_all
    from busguard.watch import layout_from_map, layout_matches, render

    if args.interval <= 0 or args.interval > 3600:
        raise BusguardError(f"--interval {args.interval}: expected seconds > 0 and <= 3600")
    console = Console()
    source = f"{args.host}:{port}"
    site_taps = site_layout(args.site)
    data: dict[str, Any] = {}
    client = None
    last_ok = 0.0
    frames = 0
    with Live(console=console, screen=True, auto_refresh=False,
              redirect_stdout=False) as live:
        try:
            while True:
                note = ""
                try:
                    if client is None:
                        client = connect(args.host, port, args.timeout, args.tls_ca,
                                         args.tls_cert, args.tls_key)
                    data = read_all(reader(client, args.unit))
                    last_ok = time.time()
                except Exception as exc:  # shown on the screen; the loop reconnects
                    if client is not None:
                        client.close()
                        client = None
                    when = time.strftime("%H:%M:%SZ", time.gmtime(last_ok)) if last_ok \
                        else "never"
                    note = (f"{source}: {exc}; last good read {when}, retrying every "
                            f"{args.interval:g} s")
                taps = site_taps if site_taps and layout_matches(site_taps, data) else \
                    layout_from_map(data)
                w, h = console.size
                live.update(render(data, taps, source, w, h, note), refresh=True)
                frames += 1
                if args.count and frames >= args.count:
                    break
                time.sleep(args.interval)
        except KeyboardInterrupt:
            pass
        finally:
            if client is not None:
                client.close()
    return 0
