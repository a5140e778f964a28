"""Every text file the project reads or writes names its encoding (UTF-8).

Without ``encoding=``, Python uses the locale's, which is ASCII under ``LC_ALL=C`` with UTF-8
mode off: the ``±`` of a summary table then fails to write, and a report fails to read. CI
machines run with such locales, so the rule is checked on the source rather than left to
whichever locale the test run happens to have.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("segcft", "apps", "tests")


def _is_binary_mode(call: ast.Call, position: int) -> bool:
    """Whether the call's mode argument (positional index ``position`` or ``mode=``) has a ``b``."""
    mode = call.args[position] if len(call.args) > position else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" in mode.value


def unnamed_encodings(source: str) -> list[int]:
    """Line numbers of text ``open``/``read_text``/``write_text``/``subprocess(text=True)`` calls without ``encoding``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        func = node.func
        if any(k.arg in ("text", "universal_newlines") for k in node.keywords):
            lines.append(node.lineno)  # subprocess decoding its output with the locale's codec
        elif isinstance(func, ast.Attribute) and func.attr in ("read_text", "write_text"):
            lines.append(node.lineno)
        elif isinstance(func, ast.Name) and func.id == "open" and not _is_binary_mode(node, 1):
            lines.append(node.lineno)
        elif isinstance(func, ast.Attribute) and func.attr == "open" and isinstance(func.value, ast.Name) \
                and func.value.id != "Image" and not _is_binary_mode(node, 0):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_check_finds_calls_without_an_encoding():
    source = ('open(p)\nopen(p, "rb")\nopen(p, "w", encoding="utf-8")\np.read_text()\n'
              'p.write_text(s, encoding="utf-8")\npath.open("w")\nImage.open(p)\n'
              'run(c, text=True)\nrun(c, text=True, encoding="utf-8")\n')
    assert unnamed_encodings(source) == [1, 4, 6, 8]


@pytest.mark.parametrize("folder", CHECKED)
def test_text_io_names_its_encoding(folder):
    offenders = [f"{path.relative_to(REPO)}:{line}" for path in sorted((REPO / folder).rglob("*.py"))
                 for line in unnamed_encodings(path.read_text(encoding="utf-8"))]
    assert not offenders, f"text I/O without encoding='utf-8': {offenders}"
