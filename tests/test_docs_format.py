"""docs/format.md's worked example reads stores with zarr + numpy alone, like spikestore does."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

import spikestore

DOC = Path(__file__).resolve().parent.parent / "docs" / "format.md"


def write_example_store(path: Path) -> None:
    """The store the documented readers are checked on: bits with a shape change, raw
    floats, a scalar stream with an empty layer name, a bool stream with a nested layer."""
    g = torch.Generator().manual_seed(0)
    with spikestore.Store(path, chunk_bytes=300) as st:
        for step in range(7):
            st.set_step(step)
            st.append("output/fc1", (torch.rand(8, 4, 10 if step < 5 else 9, generator=g) < .2).float())
            st.append("v_seq/fc1", torch.rand(8, 4, 10, generator=g))
            st.append("v_seq/", torch.rand(()).item())
            st.append("output/a/b", torch.rand(3, 17, generator=g) < .5)


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
