"""Every ```python block of docs/tutorial.md runs, so the tutorial cannot drift.

The tutorial is split at its ``## `` headings. Each section's python blocks
are run top to bottom in one fresh namespace, in a fresh working directory,
with ``tempfile`` pointed at pytest's ``tmp_path`` so the stores the
sections write land there. Line numbers in tracebacks are those of the
markdown file.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"

_FENCE = re.compile(r"^(```|~~~)")


def _sections(text: str) -> list[tuple[str, str]]:
    """Return ``(title, source)`` per ``## `` section that has python code.

    ``source`` holds the section's python blocks at their original line
    numbers (everything else blanked), so it compiles as one program whose
    tracebacks point into the markdown file.
    """
    lines = text.splitlines()
    sections: list[tuple[str, list[str]]] = [("(preamble)", [""] * len(lines))]
    fence: str | None = None
    in_python = False
    for n, line in enumerate(lines):
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                in_python = line[len(fence):].strip().split(" ")[0].lower() in ("python", "py")
            elif line.startswith("## "):
                sections.append((line[3:].strip(), [""] * len(lines)))
            continue
        if m and m.group(1) == fence and line.strip() == fence:
            fence, in_python = None, False
        elif in_python:
            sections[-1][1][n] = line
    if fence is not None:
        raise AssertionError(f"{DOC}: unterminated code fence")
    return [(title, "\n".join(src) + "\n") for title, src in sections if any(s.strip() for s in src)]


SECTIONS = _sections(DOC.read_text(encoding="utf-8")) if DOC.exists() else []


def test_tutorial_has_the_sections_of_the_seed() -> None:
    titles = [title for title, _ in SECTIONS]
    assert len(titles) >= 9, titles
    for number, word in [(1, "OutputMonitor"), (2, "firing"), (3, "AttributeMonitor"),
                         (4, "InputMonitor"), (5, "GradOutputMonitor"), (6, "GradInputMonitor"),
                         (7, "memory"), (8, "every"), (9, "flush")]:
        assert any(t.startswith(f"{number}. ") and word in t for t in titles), (number, word, titles)


@pytest.mark.parametrize("source", [src for _, src in SECTIONS], ids=[title for title, _ in SECTIONS])
def test_section_runs(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spikestore._write import registry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = set(registry.open_stores())
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    try:
        exec(compile(source, str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    finally:
        leaked = [s for s in registry.open_stores() if s not in before]
        for s in leaked:
            s.close()
    assert not leaked, f"the section leaves stores open: {leaked}"
