"""The ``w1_tree`` pytest fixture (re-exported by :mod:`busguard.testing`, so plugin authors
get it through the ``pytest11`` entry point): a :class:`W1Tree` under
``<tmp_path>/w1/devices``, i.e. what a site file in ``tmp_path`` (``site_file``,
``make_runtime``) reads with ``[onewire] base_dir = "w1/devices"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from busguard.w1 import tree


class W1Tree:
    """A 1-Wire devices folder that tests fill like the kernel does."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)

    def write(self, sensor_id: str, temp_c: float, crc_ok: bool = True,
              resolution: int = 12) -> Path:
        return tree.write_sensor_file(self.base_dir, sensor_id, temp_c, crc_ok, resolution)

    def power_on(self, sensor_id: str) -> Path:
        return tree.write_power_on_value(self.base_dir, sensor_id)

    def not_ready(self, sensor_id: str) -> Path:
        return tree.write_not_ready(self.base_dir, sensor_id)

    def remove(self, sensor_id: str) -> None:
        tree.remove_sensor(self.base_dir, sensor_id)

    def sensors(self) -> list[str]:
        return tree.list_sensors(self.base_dir)


@pytest.fixture
def w1_tree(tmp_path: Path) -> W1Tree:
    return W1Tree(tmp_path / "w1" / "devices")

