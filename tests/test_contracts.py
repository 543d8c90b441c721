"""One home for each idea: the plugin contract (hooks through pluggy, observers as objects,
GPIO backends registered like any type), typed options, one loader, and what the register
map shows about a breaker coming from the block's declaration."""

from __future__ import annotations

import re

import pytest

from busguard import hookimpl
from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult, BreakerStatus, BreakerView
from busguard.config import document as document_mod
from busguard.config.params import Param, Values
from busguard.errors import ConfigError
from busguard.faultlog import FaultLogObserver, get_fault_log
from busguard.gpio.mock import MockBackend
from busguard.loader import load, load_types
from busguard.northbound import mapdef
from busguard.runtime import check_site

SITE = """
[site]
name = "contracts"
[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a"]
[[breaker]]
name = "cb-1"
driver = "memory"
points = ["led"]
[[block]]
name = "limit"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 100.0
"""


# -- pluggy: busguard_register_types goes through the hook machinery --------------------------
class Renamed:
    """A plugin whose implementation is named after its job (pluggy's ``specname``): only a
    call through ``pm.hook`` finds it."""

    @hookimpl(specname="busguard_register_types")
    def add_my_types(self, registry):
        registry.add_block(Opener)


class Opener(Block):
    """Opens a breaker through an output named its own way, and latches."""

    type_name = "opener"
    failsafe_policy = "a bad input holds the last decision; faulted: open_cmd forced to 0"
    codes = {"T-OPEN": "critical: opened"}
    params = {"point": Param(str, ref="point"), "breaker": Param(str, ref="breaker"),
              "above": Param(float, default=50.0)}

    def __init__(self, name, params):
        super().__init__(name, params)
        self.latched = False

    def inputs(self):
        return (self.p["point"],)

    def outputs(self):
        return {f"{self.p['breaker']}.open_cmd": 0.0}

    def points(self):
        from busguard.image import PointSpec

        return [PointSpec(f"{self.p['breaker']}.clear", source="command", command=True,
                          minval=0, maxval=65535)]

    def map_breakers(self):
        br = self.p["breaker"]
        return (BreakerView(br, f"{br}.open_cmd", f"{br}.clear"),)

    def breakers(self):
        return {self.p["breaker"]: BreakerStatus(self.latched, "T-OPEN" if self.latched
                                                 else "")}

    def scan(self, snap, now):
        if snap.value(self.p["point"]) > self.p["above"]:
            self.latched = True
        res = BlockResult(outputs={f"{self.p['breaker']}.open_cmd": float(self.latched)})
        res.add(AlarmCondition("open", Severity.CRITICAL, "T-OPEN", "opened",
                               device=self.p["breaker"]) if self.latched else None)
        return res


def test_register_types_is_called_through_pluggy():
    _pm, registry = load_types(extra=[Renamed()])
    assert registry.blocks["opener"] is Opener
    assert registry.origin["block type 'opener'"] not in ("", "?")
    assert registry.origin["block type 'threshold_alarm'"] == "blocks"


def test_failsafe_policy_and_codes_are_part_of_the_block_contract():
    assert Block.failsafe_policy == "" and dict(Block.codes) == {}
    from busguard_blocks._docs import block_markdown

    text = block_markdown(Opener)
    assert "a bad input holds the last decision" in text and "`T-OPEN`" in text


# -- observers: explicit objects, one per runtime ---------------------------------------------
def test_each_runtime_gets_its_own_fault_log_observer(make_runtime):
    a, b = make_runtime(SITE), make_runtime(SITE)
    obs_a = a.pm.get_plugin("busguard-faultlog")
    obs_b = b.pm.get_plugin("busguard-faultlog")
    assert isinstance(obs_a, FaultLogObserver) and isinstance(obs_b, FaultLogObserver)
    assert obs_a is not obs_b and obs_a.runtime is a and obs_b.runtime is b
    assert get_fault_log(a) is obs_a.log


def test_an_observer_can_be_disabled_by_name(make_runtime, run_scans):
    rt = make_runtime(SITE + '[plugins]\ndisabled = ["busguard-faultlog"]\n', start=True)
    rt.image.write("m1.current_l1_a", 500.0)
    run_scans(rt, 2)  # an alarm edge: nobody writes the fault log
    assert rt.pm.get_plugin("busguard-faultlog") is None
    with pytest.raises(LookupError):
        get_fault_log(rt)
    assert not rt.site.fault_log.exists()


# -- GPIO backends: registered through busguard_register_types --------------------------------
class ThirdPartyGpio:
    """What an ``lgpio`` plugin would do: register a backend by name."""

    def __init__(self):
        self.built = []

    @hookimpl
    def busguard_register_types(self, registry):
        registry.add_gpio_backend("lgpio-test", self.factory)

    def factory(self, section, resolve, ticks):
        self.built.append(dict(section))
        return MockBackend("lgpio-test", resolve("lines"), ticks)


GPIO_SITE = """
[site]
name = "gpio-plugin"
[gpio]
backend = "{backend}"
[[breaker]]
name = "cb-1"
led_line = 17
"""


def test_a_third_party_gpio_backend_is_selected_by_name(tmp_path, make_runtime):
    plugin = ThirdPartyGpio()
    path = tmp_path / "gpio.toml"
    path.write_text(GPIO_SITE.format(backend="lgpio-test"), encoding="utf-8")
    assert check_site(path, extra=[plugin]).sections["gpio"]["backend"] == "lgpio-test"
    rt = make_runtime(path, extra=[plugin], start=True)
    assert rt.state == "running"
    assert plugin.built and plugin.built[0]["backend"] == "lgpio-test"


def test_an_unknown_gpio_backend_lists_the_registered_ones(tmp_path):
    path = tmp_path / "gpio.toml"
    path.write_text(GPIO_SITE.format(backend="wiringpi"), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(
            "gpio.backend: got 'wiringpi'; expected one of 'cdev', 'gpiod', 'rpigpio', "
            "'mock', 'lgpio-test'")):
        check_site(path, extra=[ThirdPartyGpio()])


# -- typed options and the one loader -------------------------------------------------------
def test_block_options_are_frozen_typed_values_with_defaults(make_runtime):
    rt = make_runtime(SITE)
    p = rt.blocks[0].p
    assert isinstance(p, Values)
    assert p["high"] == 100.0 and p.high == 100.0
    assert p["hysteresis"] == 0.0 and p["severity"] == "warning"  # declared defaults
    with pytest.raises(AttributeError, match="frozen"):
        p.high = 5.0
    with pytest.raises(TypeError):
        p["high"] = 5.0  # type: ignore[index]
    dev = rt.site.device("m1")
    with pytest.raises(TypeError):
        dev.params["initial"]["current_l1_a"] = 1.0  # a table option is read-only too


def test_the_loader_parses_the_file_once_even_with_plugins_disabled(tmp_path, monkeypatch):
    calls = []
    real = document_mod.tomllib.loads  # where the site file is parsed

    def counting(text):
        calls.append(1)
        return real(text)

    monkeypatch.setattr(document_mod.tomllib, "loads", counting)
    path = tmp_path / "site.toml"
    path.write_text('[site]\nname = "x"\n[plugins]\ndisabled = ["blocks"]\n', encoding="utf-8")
    loaded = load(path)
    assert len(calls) == 1
    assert loaded.site.disabled_plugins == ("blocks",)
    assert "threshold_alarm" not in loaded.registry.blocks
    assert loaded.pm.is_blocked("blocks")


# -- the map shows what the block declares about its breaker ----------------------------------
def test_the_map_takes_trip_latch_and_reset_from_the_block(make_runtime, run_scans):
    """Read as a DCIM does (Modbus TCP on loopback): the breaker's flags and reset command
    address follow the block's declaration, not a naming convention."""
    from busguard.commands.status import connect, reader
    from busguard.northbound.reader import read_all

    site = SITE + """
[[block]]
name = "open-cb1"
type = "opener"
point = "m1.current_l1_a"
breaker = "cb-1"

[modbus_server]
port = 0
"""
    rt = make_runtime(site, extra=[Renamed()], start=True)
    regmap = mapdef.for_runtime(rt)
    reset = regmap.reset_command("cb-1")
    assert reset is not None and reset.name == "cb-1.clear"
    assert regmap.trip_outputs("cb-1") == ("cb-1.open_cmd",)
    client = connect("127.0.0.1", rt.publishers[0].port(), 3.0)
    try:
        run_scans(rt, 2)
        cb = next(d for d in read_all(reader(client, 1))["devices"] if d["name"] == "cb-1")
        assert cb["flags"] == [] and cb["reset_command"] == reset.address
        rt.image.write("m1.current_l1_a", 80.0)  # above the opener's 50 A: it latches
        run_scans(rt, 2)
        cb = next(d for d in read_all(reader(client, 1))["devices"] if d["name"] == "cb-1")
        assert cb["flags"] == ["shunt_trip", "trip_latched"]
    finally:
        client.close()
    assert rt.blocks[1].breakers()["cb-1"] == BreakerStatus(True, "T-OPEN")


def test_block_result_add_skips_none():
    res = BlockResult()
    cond = AlarmCondition("k", Severity.WARNING, "X", "m")
    res.add(None)
    res.add(cond)
    assert res.alarms == [cond]


def test_option_values_survive_copy_and_pickle(make_runtime):
    import copy
    import pickle

    p = make_runtime(SITE).blocks[0].p
    assert pickle.loads(pickle.dumps(p)) == p == copy.deepcopy(p)
    with pytest.raises(AttributeError, match="no option 'hgih'"):
        p.hgih  # noqa: B018
