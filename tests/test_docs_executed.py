"""Docs that print what they say: the code blocks of docs/*.md run, and their output is compared.

The pages are parsed with Sybil (``sybil.parsers.markdown.CodeBlockParser``, one parser
per fence language); each page runs top to bottom in one namespace:

* A ```` ```python ```` block is executed, its stdout captured. Tracebacks point at
  the markdown lines.
* A ```` ```text ```` block that follows a python block with nothing but blank lines
  between them is that block's printed output. It is compared with what the block
  printed by doctest's ``OutputChecker`` with ``ELLIPSIS``: ``...`` in the page
  matches anything (use it for temporary paths, timings and the like), and both sides
  are normalised first (trailing spaces dropped, ``0x...`` addresses blanked, sizes
  on disk within 2% of the page's taken as equal: see ``tolerate_sizes``; decimals that
  differ only by another CPU's float rounding too: ``tolerate_decimals``; runs of
  spaces compare equal, so a column that widens by a digit does not fail). Other
  ```text blocks are illustrations and are not checked.
* A python block that prints something while the page shows no output after it fails
  too: every printed line is on the page.
* A ```` ```console ```` block holds ``$ command`` lines, each followed by the output
  it prints (stdout and stderr together, compared the same way). The commands run in
  ``bash`` in a fresh folder whose ``runs/demo.zarr`` is the demo store (the one ``bash
  tools/demo.sh`` writes, the session fixture ``demo_store_dir``), with this interpreter's
  ``bin`` first on ``PATH`` so ``spikestore`` is the checkout's.
* Blocks fenced as ```` ``` ```` or ```` ```bash ```` are not run.

Where the pages run: tutorial.md in a fresh temporary folder (``tempfile`` points
there, so the stores it writes land there; no store may be left open);
reading.md and cli.md in a fresh folder whose ``runs`` is the demo store's (a link).

A page whose outputs drifted fails with every mismatching block listed (the run goes
on after a mismatch, and stops at the first exception). To rewrite the mismatching
output blocks with what the code prints now, run::

    SPIKESTORE_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/test_docs_executed.py

then restore the ``...`` the page used for temporary paths and review the diff.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import io
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
UPDATE = os.environ.get("SPIKESTORE_UPDATE_DOCS") == "1"

_CHECKER = doctest.OutputChecker()
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_PENDING = "__docs_pending_output__"  # (end offset of the python block, its line, what it printed)
_MISMATCHES = "__docs_mismatches__"


def normalise(text: str) -> str:
    """What both sides of a comparison go through: trailing spaces, addresses, final newlines."""
    text = _ADDRESS.sub("0x...", text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()) + "\n"


_SIZE = re.compile(r"(\d+(?:\.\d+)?) (B|KiB|MiB|GiB)\b")
_DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?:e[+-]?\d+)?(?![\w.])")


def tolerate_sizes(want: str, got: str) -> str:
    """``got`` with each size on disk within 2% (or one in the last digit) of the page's taken as the page's.

    Sizes on disk change by a few bytes from run to run (the index and the documents hold
    wall-clock times), which can move the last digit shown; the n-th size of ``got`` is
    compared with the n-th of ``want`` when both have as many.
    """
    wanted, found = _SIZE.findall(want), list(_SIZE.finditer(got))
    if len(wanted) != len(found):
        return got
    parts, last = [], 0
    for (value, unit), m in zip(wanted, found, strict=True):
        last_digit = 10.0 ** -len(value.partition(".")[2])  # or one in the last digit shown
        if m.group(2) == unit and abs(float(m.group(1)) - float(value)) <= max(0.02 * float(value), last_digit) + 1e-9:
            parts += [got[last:m.start()], f"{value} {unit}"]
            last = m.end()
    return "".join(parts) + got[last:]


def _close(value: str, other: str) -> bool:
    """Two printed decimals equal but for the float rounding of one CPU against another: within
    1e-6 relative (float32 keeps about 7 digits), or three units in the last digit the page shows."""
    a, b = float(value), float(other)
    digits = len(value.partition(".")[2].partition("e")[0])
    scale = 10.0 ** int(value.partition("e")[2] or 0)
    return abs(a - b) <= max(1e-6 * abs(a), 3 * 10.0 ** -digits * scale)


def tolerate_decimals(want: str, got: str) -> str:
    """``got`` with each decimal number that is :func:`_close` to the page's taken as the page's.

    The same float32 training gives results that differ in the last bit on CPUs with other
    vector units, which moves the last digits printed (a firing rate, a compression ratio,
    a numpy array). Compared line by line, where both sides have as many lines and a line as
    many decimals (a line the page elides with ``...`` keeps its own rule). Column widths that
    move with a digit are left to ``NORMALIZE_WHITESPACE``.
    """
    want_lines, got_lines = want.split("\n"), got.split("\n")
    if len(want_lines) != len(got_lines):
        return got
    out = []
    for w, g in zip(want_lines, got_lines, strict=True):
        wanted, found = _DECIMAL.findall(w), list(_DECIMAL.finditer(g))
        if len(wanted) == len(found) and all(_close(v, m.group()) for v, m in zip(wanted, found, strict=True)):
            parts, last = [], 0
            for v, m in zip(wanted, found, strict=True):
                parts += [g[last:m.start()], v]
                last = m.end()
            g = "".join(parts) + g[last:]
        out.append(g)
    return "\n".join(out)


def _compare(example: Example, want: str, got: str, what: str) -> None:
    want_n = normalise(want)
    got_n = tolerate_decimals(want_n, tolerate_sizes(want_n, normalise(got)))
    if _CHECKER.check_output(want_n, got_n, _FLAGS):
        return
    diff = _CHECKER.output_difference(doctest.Example("", want_n), got_n, _FLAGS | doctest.REPORT_UDIFF)
    example.namespace[_MISMATCHES].append((example, got, f"{example.path}, line {example.line}: {what}\n{diff}"))


def _unshown(namespace: dict) -> str | None:
    pending = namespace.pop(_PENDING, None)
    if pending and pending[2].strip():
        return (f"line {pending[1]}: the block prints output that the page does not show:\n"
                f"{pending[2]}")
    return None


def run_python(example: Example) -> None:
    __tracebackhide__ = True
    unshown = _unshown(example.namespace)
    if unshown:
        example.namespace[_MISMATCHES].append((None, None, f"{example.path}, {unshown}"))
    source = "\n" * (example.line + example.parsed.line_offset) + example.parsed  # markdown line numbers
    code = compile(source, example.path, "exec", dont_inherit=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, example.namespace)  # our own docs
    example.namespace[_PENDING] = (example.end, example.line, out.getvalue())


def check_text(example: Example) -> None:
    pending = example.namespace.get(_PENDING)
    if pending is None or example.document.text[pending[0]:example.start].strip():
        return  # not right after a python block: an illustration, not an output
    del example.namespace[_PENDING]
    _compare(example, example.parsed, pending[2], f"output of the python block at line {pending[1]}")


def run_console(example: Example) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               COLUMNS="100", NO_COLOR="1")
    commands: list[tuple[str, list[str]]] = []
    for line in example.parsed.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
        elif line.strip():
            raise AssertionError(f"{example.path}, line {example.line}: a console block starts with '$ '")
    for command, want in commands:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=300,
                              check=False)  # the page shows the failures too
        _compare(example, "\n".join(want), done.stdout + done.stderr, f"$ {command} (exit {done.returncode})")


SYBIL = Sybil(parsers=[CodeBlockParser("python", run_python), CodeBlockParser("text", check_text),
                       CodeBlockParser("console", run_console)])


def run_page(path: Path) -> None:
    """Run every example of ``path`` in order; fail listing every output that does not match."""
    document = SYBIL.parse(path)
    document.namespace[_MISMATCHES] = mismatches = []
    for example in document:
        example.evaluate()
    unshown = _unshown(document.namespace)
    if unshown:
        mismatches.append((None, None, f"{path}, {unshown}"))
    if mismatches and UPDATE:
        _rewrite(path, document.text, [(ex, got) for ex, got, _ in mismatches if ex is not None])
    assert not mismatches, f"{len(mismatches)} output(s) of {path.name} differ from the page:\n\n" + \
        "\n\n".join(message for _, _, message in mismatches)


def _rewrite(path: Path, text: str, fixes: list[tuple[Example, str]]) -> None:
    for example, got in sorted(fixes, key=lambda f: f[0].start, reverse=True):
        if example.region.lexemes.get("arguments") != "text":
            continue  # console blocks are edited by hand
        source = example.parsed
        start = example.start + text[example.start:example.end].index(source)
        text = text[:start] + got.rstrip("\n") + "\n" + text[start + len(source):]
    path.write_text(text, encoding="utf-8")


@pytest.mark.slow  # the tutorial's crash section runs a script in a subprocess
def test_tutorial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spikestore._write.open_stores import open_stores

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = set(open_stores())
    try:
        run_page(DOCS / "tutorial.md")
    finally:
        leaked = [s for s in open_stores() if s not in before]
        for s in leaked:
            s.close()
    assert not leaked, f"the tutorial leaves stores open: {leaked}"


def test_tutorial_keeps_the_sections_of_spikingjellys_monitor_tutorial() -> None:
    titles = [line[3:] for line in (DOCS / "tutorial.md").read_text().splitlines() if line.startswith("## ")]
    for number, word in [(1, "OutputMonitor"), (2, "firing"), (3, "AttributeMonitor"),
                         (4, "InputMonitor"), (5, "GradOutputMonitor"), (6, "GradInputMonitor"),
                         (7, "memory"), (8, "every"), (9, "flush")]:
        assert any(t.startswith(f"{number}. ") and word in t for t in titles), (number, word, titles)


@pytest.mark.slow  # the demo store comes from a subprocess; cli.md runs the console script
@pytest.mark.parametrize("page", ["reading.md", "cli.md"])
def test_page_on_the_demo_store(page: str, demo_store_dir: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    (tmp_path / "runs").symlink_to(demo_store_dir / "runs")  # what the page writes lands in tmp_path
    monkeypatch.chdir(tmp_path)
    try:
        run_page(DOCS / page)
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")


def _demo_defaults() -> dict[str, object]:
    """The default of each option of tools/demo.py, read from its source: what a run without arguments uses."""
    found: dict[str, object] = {}
    for node in ast.walk(ast.parse((ROOT / "tools" / "demo.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            default = next((k.value for k in node.keywords if k.arg == "default"), None)
            if default is not None:
                found[ast.literal_eval(node.args[0]).lstrip("-")] = ast.literal_eval(default)
    return found


@pytest.mark.slow  # the demo store comes from a subprocess
def test_the_pages_run_on_the_store_of_the_readmes_main_command(demo_store_dir: Path) -> None:
    import spikestore

    assert "```bash\nbash tools/demo.sh\n```" in (ROOT / "README.md").read_text(encoding="utf-8")  # no arguments
    calls = [line.split() for line in (ROOT / "tools" / "demo.sh").read_text(encoding="utf-8").splitlines()
             if "demo.py" in line and not line.lstrip().startswith("#")]
    assert calls == [["python", "tools/demo.py", '"$@"']]  # so the demo runs with its defaults
    defaults = _demo_defaults()
    assert defaults["out"] == "runs/demo.zarr" and defaults["epochs"] == 3, defaults
    with spikestore.open(demo_store_dir / str(defaults["out"])) as run:
        recorded = {k: run.metadata[k] for k in ("epochs", "T", "batch", "hidden", "lr", "seed")}
        assert recorded == {k: defaults[k] for k in recorded}
        assert len(run["output/2"]) == 3 * -(-1347 // 64)  # 75% of sklearn's 1797 digits, batch 64, each epoch


@pytest.mark.slow  # its console block runs in bash
def test_a_changed_output_line_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nprint('a')\nprint(1 + 1)\n```\n\n```text\na\n3\n```\n\n"
                    "```python\nprint('unshown')\n```\n\nProse.\n\n```text\nnot an output: prose between\n```\n\n"
                    "```console\n$ echo 0x7f00deadbeef /tmp/x\n0x... /tmp/...\n```\n")
    with pytest.raises(AssertionError) as failure:
        run_page(page)
    message = str(failure.value)
    assert "2 output(s)" in message, message
    assert "line 6: output of the python block at line 1" in message and "Got:" in message, message
    assert "unshown" in message and "echo" not in message, message


def test_decimals_tolerate_float_rounding_only() -> None:
    want = "rates [0.20243345 0.2060293 ]\nratio 77.54%\n3072.0 0.3109494745731354\ncreated ..."
    got = ("rates [0.20243342 0.2060293 ]\nratio 77.53%\n3072.0 0.31094950437545776\n"
           "created 2026-12-01T09:26:00.853")
    assert tolerate_decimals(want, got) == want.replace("...", "2026-12-01T09:26:00.853")
    for line, wrong in ((0, "rates [0.20243445 0.2060293 ]"), (1, "ratio 77.58%"), (2, "3072.0 0.3109594745731354"),
                        (2, "3073.0 0.3109494745731354")):
        lines = got.split("\n")
        lines[line] = wrong
        assert tolerate_decimals(want, "\n".join(lines)).split("\n")[line] == wrong


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script` is deprecated:DeprecationWarning")  # Norse's import
def test_other_libraries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("snntorch")
    pytest.importorskip("norse")
    monkeypatch.chdir(tmp_path)  # the page writes its stores to the current folder
    run_page(DOCS / "other-libraries.md")
