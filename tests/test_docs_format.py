"""docs/format.md's worked example reads stores with zarr + numpy alone, like spikestore does."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from helpers import write_example_store

import spikestore

DOC = Path(__file__).resolve().parent.parent / "docs" / "format.md"


def _example_reader() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## 8. Worked example"):text.index("## 9.")]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    reader = blocks[-1]
    return reader[:reader.index("\nfor key in")]  # keep the functions, drop the demo loop


def test_the_documented_reader_matches_spikestore(tmp_path):
    path = tmp_path / "example.zarr"
    write_example_store(path)
    ns: dict = {}
    exec(compile(_example_reader().replace('Path("/tmp/fmt_example.zarr")', f"Path({str(path)!r})"),
                 str(DOC), "exec"), ns)
    run = spikestore.open(path)
    for key in run.streams:
        s = run[key]
        for i in range(len(s)):
            row, step = ns["read_record"](key, i)
            np.testing.assert_array_equal(row, s[i])
            assert row.shape == s[i].shape and step == s.steps[i]
