"""The README's library snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippets() -> list[str]:
    text = README.read_text()
    section = text.split("## Using it as a library", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_library_section_has_a_snippet_per_interface():
    joined = "\n".join(_snippets())
    for name in ("gymnasium.make(", "make_vec(", "MaskablePPO(", "ClickSB3VecEnv(", "check_env_specs(",
                 "Collector(", "step_autoreset("):
        assert name in joined, name


# The Gymnasium snippet builds the default 1,024-frame env and the SB3 one trains twice: slow
# (tests/test_library.py checks the same interfaces on a small env in the default run).
@pytest.mark.parametrize("index", [pytest.param(0, marks=pytest.mark.slow),
                                   pytest.param(1, marks=pytest.mark.slow), 2, 3])
def test_library_snippet_runs(index, capsys):
    snippets = _snippets()
    assert len(snippets) == 4
    exec(compile(snippets[index], f"README.md snippet {index}", "exec"), {"__name__": "readme"})
