"""The DCIM-facing side: the register map, its Modbus server and its snapshot.

Importing this package imports nothing: ``busguard run``'s early server
(:mod:`.earlyserve`) must answer before pymodbus is imported. The module that imports
``pymodbus.server`` (:mod:`.server`) does so inside :func:`busguard.hiddenimport.hidden`.
"""
