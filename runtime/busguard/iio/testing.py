"""The ``iio_tree`` pytest fixture (re-exported by :mod:`busguard.testing`): an IIO devices
folder under ``<tmp_path>/iio/devices``, what a site file in ``tmp_path`` reads with
``[iio] base_dir = "iio/devices"``."""

from __future__ import annotations

from pathlib import Path

import pytest

from busguard.iio import tree


class IioTree:
    """An IIO devices folder that tests fill like the kernel does."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)

    def max31865(self, index: int, temp_c: float, label: str | None = None,
                 fault: bool = False, r_ref_ohm: float = 430.0, r0_ohm: float = 100.0) -> Path:
        return tree.write_max31865(self.base_dir, index, temp_c, label, fault, r_ref_ohm,
                                   r0_ohm)

    def raw_code(self, index: int, code: int) -> None:
        tree.write_raw_code(self.base_dir, index, code)

    def remove(self, index: int) -> None:
        tree.remove_device(self.base_dir, index)


@pytest.fixture
def iio_tree(tmp_path: Path) -> IioTree:
    return IioTree(tmp_path / "iio" / "devices")
