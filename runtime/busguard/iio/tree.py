"""The Linux IIO sysfs tree (``/sys/bus/iio/devices``) as the kernel shows a temperature channel,
written for tests and the simulator, and the look-up of a device by name or label.

A MAX31865 RTD converter (kernel driver ``max31865``) appears as::

    <base_dir>/iio:device0/name                 max31865
    <base_dir>/iio:device0/label                busbar-a1      (from the device tree, optional)
    <base_dir>/iio:device0/in_temp_raw          10265          (15-bit RTD code)
    <base_dir>/iio:device0/in_temp_scale        31.250000
    <base_dir>/iio:device0/fault_ovuv           0              (over/under-voltage fault bit)

Other IIO temperature drivers follow the ABI ``(in_temp_raw + in_temp_offset) *
in_temp_scale`` in milli-degrees C, or give ``in_temp_input`` directly;
:func:`write_abi_device` writes those. Files are replaced atomically (temp file + rename) so a
reader in another process never sees half a number. Nothing here reads the clock.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from busguard.atomicfile import replace_text
from busguard.iio.rtd import code_of

DEVICE_PREFIX = "iio:device"


def device_dir(base_dir: str | os.PathLike[str], index: int) -> Path:
    return Path(base_dir) / f"{DEVICE_PREFIX}{int(index)}"




def write_max31865(base_dir: str | os.PathLike[str], index: int, temp_c: float,
                   label: str | None = None, fault: bool = False, r_ref_ohm: float = 430.0,
                   r0_ohm: float = 100.0) -> Path:
    """Create or update a MAX31865 device reading ``temp_c`` through a PT100 (PT1000 with
    ``r0_ohm=1000``); ``fault`` sets its over/under-voltage fault bit."""
    d = device_dir(base_dir, index)
    d.mkdir(parents=True, exist_ok=True)
    replace_text(d / "name", "max31865\n")
    if label is not None:
        replace_text(d / "label", f"{label}\n")
    replace_text(d / "in_temp_scale", "31.250000\n")
    replace_text(d / "fault_ovuv", "1\n" if fault else "0\n")
    replace_text(d / "in_filter_notch_center_frequency", "60\n")
    replace_text(d / "in_temp_raw", f"{code_of(temp_c, r_ref_ohm, r0_ohm)}\n")
    return d


def write_raw_code(base_dir: str | os.PathLike[str], index: int, code: int) -> None:
    """Set the RTD code as it is (0 or 32767: a shorted or open RTD)."""
    replace_text(device_dir(base_dir, index) / "in_temp_raw", f"{int(code)}\n")


def write_abi_device(base_dir: str | os.PathLike[str], index: int, name: str, raw: int,
                     scale: float, offset: float | None = None, label: str | None = None,
                     channel: str = "temp") -> Path:
    """A generic IIO temperature channel (value = (raw + offset) * scale, milli-degrees C)."""
    d = device_dir(base_dir, index)
    d.mkdir(parents=True, exist_ok=True)
    replace_text(d / "name", f"{name}\n")
    if label is not None:
        replace_text(d / "label", f"{label}\n")
    replace_text(d / f"in_{channel}_scale", f"{scale:.6f}\n")
    if offset is not None:
        replace_text(d / f"in_{channel}_offset", f"{offset:g}\n")
    replace_text(d / f"in_{channel}_raw", f"{int(raw)}\n")
    return d


def remove_device(base_dir: str | os.PathLike[str], index: int) -> None:
    """The device vanishes (driver unbound, SPI board unplugged): its folder disappears."""
    shutil.rmtree(device_dir(base_dir, index), ignore_errors=True)


def read_attr(folder: Path, name: str) -> str | None:
    """One sysfs attribute, stripped; None when the file does not exist."""
    try:
        with open(folder / name, encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def find_device(base_dir: str | os.PathLike[str], device: str) -> tuple[Path | None, str]:
    """The folder of the IIO device called ``device``, and why not when there is none.

    ``device`` is matched against each device's ``label`` first (unique by construction on a
    well-made device tree), then its ``name`` (the driver, e.g. ``max31865``: only when exactly
    one device has it), or is a folder name itself (``iio:device0``)."""
    base = Path(base_dir)
    if not base.is_dir():
        return None, f"no IIO devices folder {base} (no IIO driver loaded?)"
    direct = base / device
    if device.startswith(DEVICE_PREFIX) and direct.is_dir():
        return direct, ""
    by_label, by_name = [], []
    for d in sorted(base.iterdir()):
        if not d.name.startswith(DEVICE_PREFIX):
            continue
        try:
            if read_attr(d, "label") == device:
                by_label.append(d)
            elif read_attr(d, "name") == device:
                by_name.append(d)
        except OSError:
            continue  # a device going away while we look
    if by_label:
        return by_label[0], ""
    if len(by_name) == 1:
        return by_name[0], ""
    if by_name:
        return None, (f"{len(by_name)} IIO devices are named {device!r} "
                      f"({', '.join(d.name for d in by_name)}); give each a label in the "
                      f"device tree and use it, or the folder name")
    return None, f"no IIO device labelled or named {device!r} under {base}"
