"""The command line: help everywhere, exit codes 0 / 1 / 2, default site inside a checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from busguard.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: busguard " + name in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert main([]) == 2


def test_runtime_failure_exits_1(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 1
    assert "cannot read recording" in capsys.readouterr().err


def test_check_without_argument_uses_the_bundled_site_inside_a_checkout():
    run = subprocess.run([sys.executable, "-m", "busguard.cli", "check"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok: site.toml: site ")


def test_missing_default_site_is_a_clear_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "busguard.cli", "check"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    assert run.returncode in (1, 2)
    assert "no site file given and none found" in run.stderr


def test_version_json():
    run = subprocess.run([sys.executable, "-m", "busguard.cli", "version", "--json"],
                         capture_output=True, text=True, timeout=60)
    info = json.loads(run.stdout)
    assert info["busguard"] and info["pymodbus"].startswith("3.")


def test_every_option_of_every_command_has_help():
    """`busguard <command> --help` documents every option (0.1 left `demo --seed` and
    `recalibrate --phase` bare)."""
    import argparse

    from busguard.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare = [f"{name} {'/'.join(act.option_strings) or act.dest}"
            for name, cmd in sub.choices.items() for act in cmd._actions
            if not act.help and not isinstance(act, argparse._HelpAction)]
    assert bare == []


def test_no_site_file_found_is_a_usage_error_exit_2(tmp_path, monkeypatch, capsys):
    """As the README promises: a usage or configuration error exits 2 (0.1 exited 1)."""
    from busguard.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BUSGUARD_SITE", raising=False)
    if Path("/etc/busguard/site.toml").is_file():
        pytest.skip("this machine has /etc/busguard/site.toml: the fallback finds it")
    assert main(["check"]) == 2
    assert "no site file given and none found" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_without_the_simulator_the_tools_commands_name_their_package(command, monkeypatch,
                                                                      capsys):
    """On a unit with the runtime package only (no busguard-tools), the CLI still builds and
    `simulate` / `demo` stop with exit 2 naming the package to install."""
    from busguard.cli import main

    monkeypatch.setitem(sys.modules, "busguard.sim.scenarios", None)  # import fails
    assert main([command, "site.toml"]) == 2
    assert "busguard-tools package" in capsys.readouterr().err
