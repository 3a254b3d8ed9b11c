"""The code keeps the shape docs/architecture.md describes: small core modules, and plugins that
use only the public API."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = {"ltcore", "ltcore.losses", "ltcore.metrics", "ltcore.protocols", "ltcore.testing"}
"""What plugin code may import from ltcore (docs/api.md)."""

MAX_LINES = 600


def test_no_core_module_is_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "ltcore").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"core modules over {MAX_LINES} lines: {long}"


def ltcore_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of an ltcore module in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == "ltcore" or n.startswith("ltcore.")]
    return found


def test_plugins_and_examples_import_only_the_public_api():
    folders = [ROOT / "plugins", ROOT / "examples"]
    files = [p for folder in folders if folder.is_dir() for p in folder.rglob("*.py")]
    assert files
    internal = [f"{p.relative_to(ROOT)}:{line}: {module}" for p in files
                for line, module in ltcore_imports(p) if module not in PUBLIC_MODULES]
    assert not internal, "imports of ltcore internals:\n" + "\n".join(internal)


def test_the_public_api_loads_lazily_and_every_name_resolves():
    import subprocess
    import sys

    code = ("import sys, ltcore; from ltcore import hookimpl, doc; "
            "assert 'torch' not in sys.modules, 'importing ltcore imported torch'; "
            "missing = [n for n in ltcore.__all__ if getattr(ltcore, n, None) is None]; "
            "assert not missing, missing")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["losses", "metrics"])
def test_function_libraries_list_their_public_names(name):
    import importlib

    module = importlib.import_module(f"ltcore.{name}")
    assert module.__all__ and all(callable(getattr(module, n)) for n in module.__all__)
