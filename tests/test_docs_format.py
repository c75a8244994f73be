"""docs/format.md's worked example reads stores with zarr + numpy alone, like spikestore does."""

from __future__ import annotations

import json
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


def _shown_json(after: str) -> dict:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## 8. Worked example"):text.index("## 9.")]
    block = section[section.index(after):]
    return json.loads(re.search(r"```json\n(.*?)```", block, flags=re.S).group(1))


def _untagged(meta: dict) -> dict:
    """A stream group's metadata with the values of its chunk tags blanked (they follow the random records)."""
    doc = meta["attributes"]["spikestore"]
    for entry in (*doc["segments"], doc["index"]):
        for field in ("tags", "tail"):
            if field in entry:
                value = entry[field]
                entry[field] = {k: "?" for k in value} if isinstance(value, dict) else "?"
    return meta


def test_the_worked_example_shows_the_documents_the_writer_writes(tmp_path):
    # The page's example store, written again: its stream document is what the page shows, and the
    # root document has the same keys (its times, versions, pid and host vary).
    import torch

    path = tmp_path / "fmt_example.zarr"
    with spikestore.Store(path, mode="w") as st:
        for step in range(3):
            st.set_step(step)
            st.append("output/fc1", (torch.rand(8, 4, 10) < .2).float())
            st.append("v_seq/fc1", torch.rand(8, 4, 10))
    written = json.loads((path / "output" / "fc1" / "zarr.json").read_text())
    assert _untagged(_shown_json("`output/fc1/zarr.json`")) == _untagged(written)
    root = json.loads((path / "zarr.json").read_text())["attributes"]["spikestore"]
    shown = _shown_json("Root `zarr.json`")["attributes"]["spikestore"]
    assert shown.keys() == root.keys() and shown["writer"].keys() == root["writer"].keys()
    assert shown["versions"].keys() == root["versions"].keys()
    assert (shown["format_version"], shown["streams"]) == (root["format_version"], root["streams"])
    listed = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}
    text = DOC.read_text(encoding="utf-8")
    for name in listed:
        if not name.startswith("v_seq/fc1/") or "seg000000" in name:
            assert f"\n{name}" in text, name
