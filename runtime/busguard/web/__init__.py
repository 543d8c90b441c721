"""``[web]``: the operator's HTTPS page, its JSON API and ``/metrics`` (docs/web.md).

Read-only, on the I/O side: an aiohttp server in its own thread and event loop serves what a
refresher task decoded from the shared register-map snapshot
(:mod:`busguard.northbound.snapshot`) at most every ``refresh_ms``; no request computes
anything from the scan and none can make the scan wait.
"""
