"""EngineOptions against the settings it is built from (in server.py)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import xshathra.engine
from xshathra.engine.options import EngineOptions
from xshathra.server import engine_options
from xshathra.settings import Settings


def test_defaults_are_the_settings_defaults() -> None:
    """A node built without settings (tests, tools) behaves as one served with defaults."""
    assert engine_options(Settings(_env_file=None)) == EngineOptions()


def test_every_option_is_taken_from_its_setting() -> None:
    fields = [f.name for f in dataclasses.fields(EngineOptions)]
    assert all(name in Settings.model_fields for name in fields)
    # Values unlike the defaults: each must arrive in the option of the same name.
    changed = {name: getattr(EngineOptions(), name) for name in fields}
    changed = {
        name: (value + "x" if isinstance(value, str) else value * 3)
        for name, value in changed.items()
    }
    assert dataclasses.asdict(engine_options(Settings(_env_file=None, **changed))) == changed


def test_the_engine_reads_no_settings() -> None:
    """The composition root hands the engine its options: no engine module imports settings."""
    engine = Path(xshathra.engine.__file__).parent
    for module in engine.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert "xshathra.settings" not in imported, module.name
