"""site.toml validation: every class of error names file, key path, value and what is valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from busguard.errors import ConfigError
from busguard.runtime import check_site

REPO = Path(__file__).resolve().parents[1]
BAD = Path(__file__).parent / "bad_sites"

GOOD = """
[site]
name = "t"
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a"]
[[block]]
name = "hi"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 640.0
"""


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        check_site(path)
    return [str(p) for p in err.value.problems]


def test_good_site_loads_into_frozen_objects(site_file):
    site = check_site(site_file(GOOD))
    assert site.name == "t"
    assert site.scan.period_ms == 10.0  # default
    meter = site.device("m1")
    assert meter.poll_ms == 100.0 and meter.params["points"] == ("current_l1_a",)
    assert [p.name for p in site.points] == ["m1.current_l1_a"]
    with pytest.raises(AttributeError):
        site.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        site.blocks[0].params["high"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize("case", sorted(p.stem for p in BAD.glob("*.toml")))
def test_bad_site_gives_exactly_the_expected_messages(case):
    """Configs are tests (Klipper's printers.test): each bad site is paired with its messages."""
    path = BAD / f"{case}.toml"
    expected = (BAD / f"{case}.expected").read_text().strip().splitlines()
    got = [m.replace(str(path), path.name) for m in problems(path)]
    assert got == expected


def test_all_errors_are_reported_at_once(site_file):
    text = GOOD.replace("poll_ms = 100", "poll_ms = -5").replace("high = 640.0",
                                                                 "high = 'lots'\nhigg = 1")
    msgs = problems(site_file(text))
    assert len(msgs) == 3
    assert any("meter[0].poll_ms: got -5; expected a number >= 1" in m for m in msgs)
    assert any("block[0].high: got 'lots' (string); expected a number" in m for m in msgs)
    assert any("block[0].higg: unknown option 'higg'; did you mean 'high'?" in m for m in msgs)


def test_plugin_block_params_get_the_same_validation(site_file):
    from busguard import hookimpl
    from busguard.block import Block
    from busguard.config.params import Param

    class Fancy(Block):
        type_name = "fancy"
        params = {"gain": Param(float, minval=0.0, maxval=2.0)}

    class Plugin:
        @hookimpl
        def busguard_register_types(self, registry):
            registry.add_block(Fancy)

    path = site_file('[site]\nname = "t"\n[[block]]\nname = "f"\ntype = "fancy"\ngain = 3\n')
    with pytest.raises(ConfigError) as err:
        check_site(path, extra=[Plugin()])
    assert [p.key for p in err.value.problems] == ["block[0].gain"]
    assert "got 3; expected a number >= 0 and <= 2" in err.value.problems[0].message


def test_bundled_site_is_valid():
    site = check_site(REPO / "site.toml")
    assert site.blocks, "the bundled site runs logic"


def test_check_cli_exit_codes_and_json(site_file):
    bad = site_file(GOOD.replace('point = "m1.current_l1_a"', 'point = "m1.curent_l1_a"'))
    run = subprocess.run([sys.executable, "-m", "busguard.cli", "check", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert (f"{bad}: block[0].point: no input point named 'm1.curent_l1_a'; did you mean "
            "'m1.current_l1_a'?") in run.stderr
    ok = subprocess.run([sys.executable, "-m", "busguard.cli", "check", "--json",
                         str(site_file(GOOD))], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] is True and data["meters"] == ["m1"]
    js = subprocess.run([sys.executable, "-m", "busguard.cli", "check", "--json", str(bad)],
                        capture_output=True, text=True, timeout=60)
    assert js.returncode == 2
    assert json.loads(js.stdout)["problems"][0]["key"] == "block[0].point"
