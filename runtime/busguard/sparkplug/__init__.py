"""``[sparkplug]``: busguard as an Eclipse Sparkplug B edge node on an MQTT broker.

The register map's snapshot (:mod:`busguard.northbound.snapshot`) is the only source: the
publisher's own thread turns each new image into Sparkplug metrics (:mod:`.metrics`), reports
them by exception (:mod:`.node`) over paho-mqtt (:mod:`.publisher`) and, while the broker or
the primary host is away, keeps the changes in a bounded on-disk queue (:mod:`.store`) that
is sent, in order and marked historical, when it returns. The scan never waits for any of it.
See docs/sparkplug.md.
"""
