"""docs/plugins/tutorial.md, literally: its files written, its commands run in order, in a
fresh environment."""

from __future__ import annotations

import re
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "plugins" / "tutorial.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def tutorial_steps(text: str) -> list[tuple[str, str]]:
    """The tutorial's steps in order: ``("file", path)`` with the block's text for each code
    block titled with a path, ``("run", command)`` for each ``$ `` line of a console block."""
    steps = []
    for language, info, body in BLOCK.findall(text):
        title = re.search(r'title="([^"]+)"', info)
        if title:
            steps.append(("file", title.group(1), body))
        elif language == "console":
            steps.extend(("run", line[2:], "") for line in body.splitlines()
                         if line.startswith("$ "))
    return steps


def test_the_tutorial_is_parsed_into_its_steps():
    steps = tutorial_steps(TUTORIAL.read_text())
    kinds = [(kind, what) for kind, what, _ in steps]
    assert kinds[0] == ("run", "ltrun new-plugin poly-tail")
    assert ("file", "ltcore-poly-tail/ltcore_poly_tail/plugin.py") in kinds
    assert ("run", "pip install -e ltcore-poly-tail") in kinds
    assert sum(kind == "file" for kind, _ in kinds) == 4


def test_the_tutorial_runs_as_written(author_environment):
    env = author_environment
    outputs = {}
    for kind, what, body in tutorial_steps(TUTORIAL.read_text()):
        if kind == "file":
            path = env.root / what
            assert path.parent.is_dir(), f"{what}: the tutorial writes it into a missing folder"
            path.write_text(body)
        else:
            outputs[what] = env.run(what).stdout
    tests = next(out for command, out in outputs.items() if command.startswith("pytest"))
    assert re.search(r"\b8 passed\b", tests) and "failed" not in tests, tests
    options = outputs["ltrun plugins --options poly-tail"]
    assert "poly-tail.cap" in options and "cifar10-lt" in options
    run = next(out for command, out in outputs.items() if command.startswith("ltrun --plugin"))
    assert "finished (poly-tail-digits-lt-s0-" in run and "test: acc" in run
    assert "head-capped" in run and "poly1" in run  # the plan names the sampler and the loss
