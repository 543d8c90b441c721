"""The 1-Wire sysfs file tree, written the way the Linux ``w1_therm`` driver presents it.

Tests and the simulator (``busguard simulate``) use these functions to bring probes to life in
an ordinary folder with the real ``/sys/bus/w1/devices`` layout::

    <base_dir>/28-0000075a3c1f/w1_slave
        72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
        72 01 4b 46 7f ff 0e 10 57 t=23125

The nine scratchpad bytes are encoded as the sensor family does (temperature LSB/MSB, TH, TL,
configuration register with the resolution bits, reserved bytes, Dallas/Maxim CRC-8), so the
production driver (w1thermsensor) decodes them exactly as it decodes a real sensor. Nothing
here imports w1thermsensor. Files are replaced atomically (temp file + rename), so a reader in
another process never sees half a file.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from busguard.atomicfile import replace_text

#: Family codes (first two hex digits of a sensor id) by sensor type, as the kernel names them.
FAMILIES: dict[str, int] = {
    "DS18S20": 0x10,
    "DS1822": 0x22,
    "DS18B20": 0x28,
    "DS1825": 0x3B,
    "MAX31850K": 0x3B,
    "DS28EA00": 0x42,
}
#: Families whose scratchpad holds a 12-bit two's complement count in 1/16 degC.
TWELVE_BIT_FAMILIES = frozenset({0x22, 0x28, 0x3B, 0x42})
#: Configuration register values for 9..12 bit resolution (bits 5-6).
RESOLUTION_CONFIG = {9: 0x1F, 10: 0x3F, 11: 0x5F, 12: 0x7F}
#: The value a DS18B20 holds after power-on, before its first conversion.
POWER_ON_C = 85.0

_ID_RE = re.compile(r"^([0-9a-fA-F]{2})-([0-9a-fA-F]{12})$")


def split_sensor_id(sensor_id: str) -> tuple[int, str]:
    """``"28-0000075a3c1f"`` -> ``(0x28, "0000075a3c1f")``; ValueError if malformed."""
    m = _ID_RE.match(sensor_id)
    if not m:
        raise ValueError(f"sensor id {sensor_id!r} is not 'FF-XXXXXXXXXXXX' (family code, "
                         f"dash, 12 hex digits), e.g. '28-0000075a3c1f'")
    return int(m.group(1), 16), m.group(2).lower()


def crc8(data: bytes) -> int:
    """Dallas/Maxim 1-Wire CRC-8 (polynomial x^8 + x^5 + x^4 + 1, reflected 0x8C)."""
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


def scratchpad(temp_c: float, family: int = 0x28, resolution: int = 12) -> tuple[bytes, int]:
    """The 8 scratchpad bytes (without CRC) and the kernel's ``t=`` value in millidegrees."""
    if resolution not in RESOLUTION_CONFIG:
        raise ValueError(f"resolution {resolution!r}: expected 9, 10, 11 or 12 bits")
    if family in TWELVE_BIT_FAMILIES:
        step = 1 << (12 - resolution)  # undefined low bits read as zero
        count = round(temp_c * 16.0 / step) * step
        count = max(-55 * 16, min(125 * 16, count))
        raw = count & 0xFFFF
        config = RESOLUTION_CONFIG[resolution]
        # byte 6 mirrors DS18S20's COUNT_REMAIN; the power-on scratchpad shows 0x0c there
        remain = 0x0C if count == int(POWER_ON_C * 16) else 0x10 - (count & 0xF)
        body = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, config, 0xFF, remain, 0x10])
        return body, int(count * 1000 // 16)
    # DS18S20: 9-bit half-degree count; the kernel's t= carries the extended resolution
    # (COUNT_REMAIN), which is what w1thermsensor reads for this family.
    half = round(temp_c * 2.0)
    raw = half & 0xFFFF
    remain = (16 - round((temp_c - (half >> 1) + 0.25) * 16)) % 16
    body = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, 0xFF, 0xFF, remain, 0x10])
    return body, round(temp_c * 16.0) * 1000 // 16


def w1_slave_text(temp_c: float, crc_ok: bool = True, family: int = 0x28,
                  resolution: int = 12) -> str:
    """The text of a ``w1_slave`` file for one reading (``crc_ok=False``: a corrupted read)."""
    body, milli = scratchpad(temp_c, family, resolution)
    crc = crc8(body)
    if not crc_ok:
        crc ^= 0x5A  # what a disturbed bus delivers: bytes that do not match their CRC
    line = " ".join(f"{b:02x}" for b in (*body, crc))
    return f"{line} : crc={crc:02x} {'YES' if crc_ok else 'NO'}\n{line} t={milli}\n"


def sensor_dir(base_dir: str | os.PathLike[str], sensor_id: str) -> Path:
    split_sensor_id(sensor_id)
    return Path(base_dir) / sensor_id.lower()


def write_sensor_file(base_dir: str | os.PathLike[str], sensor_id: str, temp_c: float,
                      crc_ok: bool = True, resolution: int = 12) -> Path:
    """Create or update ``<base_dir>/<sensor_id>/w1_slave`` atomically; returns its path.

    ``sensor_id`` is the kernel's directory name, family code first (``"28-0000075a3c1f"``).
    """
    family, _serial = split_sensor_id(sensor_id)
    folder = sensor_dir(base_dir, sensor_id)
    folder.mkdir(parents=True, exist_ok=True)
    return replace_text(folder / "w1_slave",
                         w1_slave_text(temp_c, crc_ok, family, resolution))


def write_power_on_value(base_dir: str | os.PathLike[str], sensor_id: str) -> Path:
    """The sensor answers with its power-on value (exactly 85.000 degC, CRC valid)."""
    return write_sensor_file(base_dir, sensor_id, POWER_ON_C)


def write_not_ready(base_dir: str | os.PathLike[str], sensor_id: str) -> Path:
    """All-zero scratchpad, as the kernel shows while a sensor does not answer."""
    folder = sensor_dir(base_dir, sensor_id)
    folder.mkdir(parents=True, exist_ok=True)
    zeros = " ".join(["00"] * 9)
    return replace_text(folder / "w1_slave", f"{zeros} : crc=00 YES\n{zeros} t=0\n")


def remove_sensor(base_dir: str | os.PathLike[str], sensor_id: str) -> None:
    """The sensor vanishes from the bus (its folder disappears, as in sysfs)."""
    shutil.rmtree(sensor_dir(base_dir, sensor_id), ignore_errors=True)


def list_sensors(base_dir: str | os.PathLike[str]) -> list[str]:
    """Sensor ids present under ``base_dir`` (folders with a valid id and a w1_slave file)."""
    base = Path(base_dir)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if _ID_RE.match(p.name) and (p / "w1_slave").is_file())


