"""The README documents every command-line option of every script and module CLI."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _parser_of(path: Path) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(path.stem + "_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"]


@pytest.mark.parametrize("script", ["train.py", "test.py", "draw.py"])
def test_every_script_option_is_in_the_readme(script):
    options = _options(_parser_of(ROOT / script))
    assert options
    missing = [o for o in options if f"`{o}`" not in README]
    assert not missing, f"{script}: README lacks {missing}"


@pytest.mark.parametrize("module, minimum", [
    ("datasets.pets", 8), ("datasets.synthetic", 8), ("models.export", 5),
    ("datasets.check", 7)])
def test_every_data_cli_option_is_in_the_readme(module, minimum, capsys):
    # These modules build their parser inside main(); --help prints every option.
    cli = importlib.import_module(module)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    help_text = capsys.readouterr().out
    options = sorted({word.strip("[](),") for word in help_text.split()
                      if word.startswith("--") and word.strip("[](),") != "--help"})
    assert len(options) >= minimum
    missing = [o for o in options if f"`{o}" not in README]
    assert not missing, f"{module}: README lacks {missing}"


def test_readme_starts_with_the_two_commands():
    head = README[:400]
    assert "make demo" in head and "make test" in head
