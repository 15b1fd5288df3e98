"""The README and the docs/ pages say what the code does: options, resumable settings, exit
codes, file names, the demo's data, the Python names, and links that lead somewhere."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.util
import sys
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
OPTIONS_PAGE = (DOCS / "options.md").read_text(encoding="utf-8")
README_MAX_LINES = 300


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem + "_cli", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"]


def _section(page: str, heading: str) -> str:
    """The text under the level-2 ``heading`` of ``page``, up to the next level-2 heading."""
    start = page.index(f"\n## {heading}\n")
    end = page.find("\n## ", start + 1)
    return page[start:] if end < 0 else page[start:end]


def _table_rows(text: str) -> dict[str, list[str]]:
    """First cell -> all cells, for every row of the Markdown tables in ``text``."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def _documented_options(heading: str) -> set[str]:
    return {cell.strip("`") for cell in _table_rows(_section(OPTIONS_PAGE, heading))
            if cell.startswith("`--")}


@pytest.mark.parametrize("script", ["train.py", "test.py", "draw.py"])
def test_every_script_option_has_a_row_on_the_options_page(script):
    options = _options(_load_script(ROOT / script).build_parser())
    assert options
    documented = _documented_options(f"`{script}`")
    assert sorted(set(options) - documented) == [], f"docs/options.md, {script}: rows missing"
    assert sorted(documented - set(options)) == [], f"docs/options.md, {script}: no such option"


@pytest.mark.parametrize("module, minimum", [
    ("datasets.pets", 8), ("datasets.synthetic", 8), ("models.export", 5),
    ("datasets.check", 7)])
def test_every_data_cli_option_has_a_row_on_the_options_page(module, minimum, capsys):
    # These modules build their parser inside main(); --help prints every option.
    cli = importlib.import_module(module)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    help_text = capsys.readouterr().out
    options = {word.strip("[](),") for word in help_text.split()
               if word.startswith("--") and word.strip("[](),") != "--help"}
    assert len(options) >= minimum
    documented = _documented_options(f"`python -m {module}`")
    assert sorted(options - documented) == [], f"docs/options.md, {module}: rows missing"
    assert sorted(documented - options) == [], f"docs/options.md, {module}: no such option"


def test_the_resumable_options_are_the_configs():
    from learning.config import DataConfig, ModelConfig, OptimConfig, RunConfig

    resumable = {field.metadata["flag"] for section in (DataConfig, ModelConfig, OptimConfig,
                                                         RunConfig)
                 for field in dataclasses.fields(section)
                 if field.metadata["resumable"] and field.metadata["flag"]}
    assert "--epochs" in resumable and "--lr" not in resumable
    rows = _table_rows(_section(OPTIONS_PAGE, "`train.py`"))
    marked = {name.strip("`") for name, cells in rows.items() if cells[2] == "yes"}
    assert marked == resumable, "docs/options.md: the resumable column"
    page = (DOCS / "stopping-and-resuming.md").read_text(encoding="utf-8")
    sentence = page[page.index("Only these options may be given anew"):]
    listed = set(re.findall(r"`(--[a-z-]+)`", sentence[:sentence.index("(the")]))
    assert listed == resumable, "docs/stopping-and-resuming.md: the resumable list"


def test_the_exit_codes_are_common_errors():
    from common import errors

    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    page = (DOCS / "bad-input.md").read_text(encoding="utf-8")
    rows = _table_rows(_section(page, "Exit codes"))
    documented = {int(cell.split()[0]) for cell in rows if cell[:1].isdigit()}
    assert documented == codes
    assert "GCNError" in rows[str(errors.GCNError.exit_code)][1]


def test_the_run_folder_page_names_every_file():
    from learning.run_folder import RunFolder
    from models.saving import MODEL_CONFIG_NAME

    names = [RunFolder.CONFIG, RunFolder.SPLIT, RunFolder.STATE, RunFolder.BEST_MODEL,
             RunFolder.HISTORY_CSV, RunFolder.HISTORY_JSON, f"{RunFolder.CURVE_STEM}.png",
             f"{RunFolder.CURVE_STEM}.svg", f"{RunFolder.PREVIEWS}/epoch_NNN.png",
             f"{RunFolder.TENSORBOARD}/", RunFolder.LOG, f"{RunFolder.SAVED_MODEL}/",
             RunFolder.LOCK, MODEL_CONFIG_NAME]
    page = (DOCS / "run-folder.md").read_text(encoding="utf-8")
    tree = page[page.index("runs/<name>/\n"):page.index("```", page.index("runs/<name>/\n"))]
    entries = {line.split()[0] for line in tree.splitlines()[1:] if line.startswith("  ")
               and not line.startswith("   ")}
    assert sorted(set(names) - entries) == []
    sheet = _load_script(ROOT / "test.py").SHEET_NAME
    assert f"`data/synthetic/test/draws/{sheet}`" in README


def test_the_readme_describes_the_demo_data_of_the_makefile():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    data_args = makefile[makefile.index("DEMO_DATA_ARGS  :="):makefile.index("DEMO_TRAIN_ARGS")]
    images = int(re.search(r"--num-images (\d+)", data_args).group(1))
    unlabeled = int(re.search(r"--num-unlabeled (\d+)", data_args).group(1))
    assert f"{images:,} labelled images and {unlabeled} unlabeled" in " ".join(README.split())


def test_readme_starts_with_the_two_commands_and_stays_short():
    head = README[:400]
    assert "make demo" in head and "make test" in head
    assert len(README.splitlines()) <= README_MAX_LINES


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_every_link_of_the_readme_and_the_docs_leads_somewhere():
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    broken = []
    for page in pages:
        for link in _links(page):
            if re.match(r"[a-z]+:", link):
                continue  # a web address
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.name}: {link}")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
                broken.append(f"{page.name}: {link} (no such heading)")
    assert broken == []
    assert (DOCS / "demo_overlays.png").exists() and (DOCS / "demo_curve.png").exists()


def test_the_python_example_uses_names_that_exist():
    page = (DOCS / "python-api.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", page, flags=re.S).group(1)
    tree = ast.parse(code)
    namespace: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                namespace[alias.name] = getattr(module, alias.name)
    # The class of each variable the example assigns from a constructor or a classmethod.
    kinds: dict[str, type] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            owner = func.id if isinstance(func, ast.Name) else getattr(func.value, "id", None)
            target = node.targets[0]
            if isinstance(namespace.get(owner), type) and isinstance(target, ast.Name):
                kinds[target.id] = namespace[owner]
    checked = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id in namespace:
            function = namespace[node.func.id]
        elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            owner = namespace.get(node.func.value.id) or kinds.get(node.func.value.id)
            if owner is None:
                continue
            assert hasattr(owner, node.func.attr), f"{owner.__name__}.{node.func.attr}"
            function = getattr(owner, node.func.attr)
        else:
            continue
        parameters = inspect.signature(function).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        for keyword in node.keywords:
            assert takes_any or keyword.arg in parameters, \
                f"{function.__qualname__}({keyword.arg}=)"
        checked.append(function.__qualname__)
    assert {"GCN", "MomentumOptimizer", "read_data", "DataSet", "SegNet.load",
            "SegNet.predict_image"} <= set(checked), checked
