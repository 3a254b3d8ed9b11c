"""The documentation describes the code as it is."""

from pathlib import Path

from ltcore.hookspecs import hookspec  # noqa: F401  (the module must import cheaply)
from ltcore.views import VIEW_PIPELINES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_views_doc_lists_every_pipeline_with_its_parameters():
    text = (DOCS / "views.md").read_text()
    for pipeline in VIEW_PIPELINES:
        assert f"| `{pipeline.name}` | {pipeline.description} |" in text, pipeline.name


def test_architecture_doc_names_every_hook():
    import ltcore.hookspecs as specs

    text = (DOCS / "architecture.md").read_text()
    hooks = [name for name in dir(specs) if not name.startswith("_") and
             hasattr(getattr(specs, name), "ltcore_spec")]
    assert len(hooks) > 20
    for name in hooks:
        assert f"`{name}" in text, name


def test_api_doc_lists_every_public_name():
    import ltcore

    text = (DOCS / "api.md").read_text()
    missing = [name for name in ltcore.__all__ if f"`{name}" not in text]
    assert not missing, f"docs/api.md does not describe {missing}"


def test_reliability_doc_names_tests_that_exist():
    """Every test the fault table names exists (those of plugins where plugins/ is present)."""
    import re

    root = DOCS.parent
    text = (DOCS / "reliability.md").read_text()
    named = re.findall(r"`((?:tests|plugins)/[\w/*]+\.py)(?:::(\w+))?", text)
    assert len(named) > 25
    for path, test in named:
        files = sorted(root.glob(path))
        if path.startswith("plugins/") and not (root / "plugins").is_dir():
            continue
        assert files, path
        if test:
            assert any(f"def {test}(" in f.read_text() for f in files), f"{path}::{test}"


def test_readme_sets_up_in_two_commands_and_says_how_to_install_for_the_cpu():
    """The set-up block holds the two commands CI runs; the install notes give the CPU-only
    route (PyTorch's CPU index, the pinned pair) and the size of the default install."""
    import re

    readme = (DOCS.parent / "README.md").read_text()
    block = readme.split("<!-- setup-commands -->")[1].split("<!-- /setup-commands -->")[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("```")]
    assert len(commands) == 2
    assert "ltrun" in commands[0] and "pytest" in commands[1]
    constraints = (DOCS.parent / "constraints.txt").read_text()
    torch_pin = re.search(r"^torch==(\S+)", constraints, re.M).group(1)
    vision_pin = re.search(r"^torchvision==(\S+)", constraints, re.M).group(1)
    assert (f"pip install torch=={torch_pin} torchvision=={vision_pin} --index-url "
            "https://download.pytorch.org/whl/cpu") in readme
    assert re.search(r"environment is about [0-9.]+ GB", readme)


def test_the_reproduce_doc_gives_every_registered_table_its_command():
    from ltcore.plugins import Plugins

    text = (DOCS / "reproduce.md").read_text()
    missing = [t for t in Plugins().tables if f"`ltrun reproduce {t}`" not in text]
    assert not missing, f"docs/reproduce.md lacks {missing}"
