"""``[snmp]``: a read-only SNMPv3 agent serving the register map's snapshot (docs/snmp.md)."""
