"""Peers: other busguards read over their register map, for row and hall aggregators.

:mod:`busguard.peer.driver` is the ``busguard_peer`` driver; :mod:`busguard.peer.layout`
finds a peer's records through its header directory and name table.
"""

from __future__ import annotations

from busguard.registry import TypeRegistry


def register_types(registry: TypeRegistry) -> None:
    from busguard.peer.driver import PeerDriver

    registry.add_driver(PeerDriver)
