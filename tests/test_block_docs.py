"""docs/blocks.md is generated from the blocks' declarations and must be current."""

from __future__ import annotations

from pathlib import Path

from busguard.runtime import load_types
from busguard_blocks import BLOCKS
from busguard_blocks._docs import blocks_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "blocks.md"


def test_blocks_md_is_current():
    assert DOC.read_text(encoding="utf-8") == blocks_markdown(), (
        "docs/blocks.md is out of date: run "
        "`.venv/bin/python -m busguard_blocks._docs > docs/blocks.md`")


def test_every_builtin_block_is_registered_and_documented():
    _pm, registry = load_types()
    for cls in BLOCKS:
        assert registry.blocks[cls.type_name] is cls
        assert registry.origin[f"block type {cls.type_name!r}"] == "blocks"
        if cls.type_name == "threshold_alarm":
            continue  # the core's example block
        assert cls.__doc__ and cls.params
        for name, param in cls.params.items():
            assert param.doc, f"{cls.type_name}.{name} has no doc"


def test_builtin_blocks_declare_failsafe_policy_and_codes():
    for cls in BLOCKS:
        if cls.type_name == "threshold_alarm":
            continue  # the core's example block says it in its docstring
        assert len(cls.failsafe_policy) > 40, cls
        assert cls.codes and "BG-INPUT" in cls.codes, cls

