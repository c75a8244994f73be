#!/usr/bin/env python
"""Read every standard-codec array of a Zarr store with tensorstore, a strict Zarr v3 reader.

``python tools/strict_read.py runs/demo.zarr`` opens each array whose codecs
are all standard (everything but spike arrays) with tensorstore's ``zarr3``
driver, compares it bit-exact with zarr-python's read of the same array, and
prints how many read and the errors of those that did not. Exit status 1 when
any array fails. tests/test_strict_readers.py checks the same on a fresh store.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tensorstore as ts
import zarr


def standard_arrays(root: Path) -> list[Path]:
    """The folders of the arrays under ``root`` whose codecs are all standard."""
    out = []
    for meta_file in sorted(root.rglob("zarr.json")):
        meta = json.loads(meta_file.read_text())
        if meta.get("node_type") == "array" and not any(c["name"].startswith("spikestore") for c in meta["codecs"]):
            out.append(meta_file.parent)
    return out


def strict_read(array_dir: Path) -> np.ndarray:
    """The whole array, as tensorstore's ``zarr3`` driver reads it."""
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(array_dir)}}
    return np.asarray(ts.open(spec, read=True).result().read().result())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    args = parser.parse_args()
    arrays = standard_arrays(args.store)
    failed: dict[str, str] = {}
    for d in arrays:
        try:
            if strict_read(d).tobytes() != zarr.open_array(d, mode="r")[:].tobytes():
                failed[str(d.relative_to(args.store))] = "values differ from zarr-python's"
        except Exception as exc:  # noqa: BLE001 - report every array's failure, whatever tensorstore raises
            failed[str(d.relative_to(args.store))] = str(exc).splitlines()[0][:160]
    print(f"{args.store}: {len(arrays) - len(failed)} of {len(arrays)} standard-codec arrays read bit-exact "
          "by tensorstore")
    for name, why in failed.items():
        print(f"  {name}: {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
