"""The ``mock_gpio`` pytest fixture (re-exported by :mod:`busguard.testing`, so plugin
authors get it through the ``pytest11`` entry point): :class:`busguard.gpio.mock.MockLines` on
``<tmp_path>/gpio``, what a site file in ``tmp_path`` uses with ``[gpio] backend = "mock"`` and
``mock_dir = "gpio"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from busguard.gpio.mock import MockLines


@pytest.fixture
def mock_gpio(tmp_path: Path) -> MockLines:
    return MockLines(tmp_path / "gpio")
