"""site.d/*.toml drop-ins merged after site.toml: order, the conflict rule, errors naming the
drop-in file and its own key path (`busguard check` exactly as a user runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from busguard.cli import main
from busguard.loader import load

SITE = """
[site]
name = "dropins"
[scan]
period_ms = 10
[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a"]
[[block]]
name = "b1"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 100.0
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE, encoding="utf-8")
    (tmp_path / "site.d").mkdir()
    return path


def dropin(site: Path, name: str, text: str) -> Path:
    p = site.with_suffix(".d") / name
    p.write_text(text, encoding="utf-8")
    return p


def test_dropins_add_devices_blocks_and_tables_in_name_order(site):
    dropin(site, "50-rack.toml", '[[meter]]\nname = "m3"\ndriver = "memory"\n'
                                 'points = ["current_l1_a"]\n[[block]]\nname = "b3"\n'
                                 'type = "threshold_alarm"\npoint = "m3.current_l1_a"\n'
                                 'high = 1.0\n')
    dropin(site, "10-first.toml", '[[meter]]\nname = "m2"\ndriver = "memory"\n'
                                  'points = ["current_l1_a"]\n[modbus_server]\nport = 0\n')
    dropin(site, "README", "not a drop-in: only *.toml count")
    before = load(site.parent / "site.toml").site
    assert [d.name for d in before.devices_of("meter")] == ["m1", "m2", "m3"]
    assert [b.name for b in before.blocks] == ["b1", "b3"]
    assert "modbus_server" in before.publishers
    (site.with_suffix(".d") / "50-rack.toml").write_text(
        '[[meter]]\nname = "m4"\ndriver = "memory"\npoints = ["current_l1_a"]\n')
    after = load(site).site
    assert after.config_hash != before.config_hash  # a drop-in is part of the site


def test_a_dropin_never_overrides_a_key_it_names_both_files(site, capsys):
    extra = dropin(site, "20-faster.toml", "[scan]\nperiod_ms = 5\n")
    assert main(["check", str(site)]) == 2
    err = capsys.readouterr().err
    assert f"{extra}: scan.period_ms: already set by {site}; a drop-in adds" in err


def test_errors_in_a_dropin_name_it_and_its_own_key_path(site, capsys):
    extra = dropin(site, "30-bad.toml", '[[meter]]\nname = "m9"\ndriver = "memory"\n'
                                        'points = ["x"]\npoll_ms = -5\n')
    assert main(["check", str(site)]) == 2
    err = capsys.readouterr().err
    assert f"{extra}: meter[0].poll_ms: got -5" in err  # its first [[meter]], not the site's 2nd


def test_a_site_without_a_dropin_folder_is_unchanged(tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text(SITE, encoding="utf-8")
    import hashlib

    assert load(path).site.config_hash == hashlib.sha256(SITE.encode()).hexdigest()
