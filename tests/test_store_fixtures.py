"""Stores written by earlier spikestores read back bit-exact (every format generation is a promise).

``tests/fixtures/stores`` holds a Zarr and an HDF5 store of each generation
(``v1``: format 1; ``v2-frames``: chunks with identity frames; ``v2-tags``:
chunks bound by tags), each written by the code of the commit that added it
(``tools/make_store_fixtures.py``), and
``expected.npz``: the values that were handed to ``Store.append``. Lossy
streams are compared with the rounding done here by independent libraries
(ml_dtypes for bfloat16, numcodecs' BitRound for keepbits).
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from numcodecs import BitRound

import spikestore
from spikestore import verify

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stores"
LOSSY = {"v_seq/fc.bf16": "bf16", "v_seq/fc.keep": "keepbits:7"}
BF16_STREAMS = {"output/bf16", "input/bf16"}


def _expected() -> dict[str, list[tuple[np.ndarray, int, int]]]:
    out: dict[str, list[tuple[np.ndarray, int, int]]] = {}
    with np.load(FIXTURES / "expected.npz", allow_pickle=False) as z:
        names = [n for n in z.files if n.count("|") == 1]
        for name in names:
            key, i = name.rsplit("|", 1)
            out.setdefault(key, []).append((int(i), z[name], int(z[f"{name}|step"]), int(z[f"{name}|call"])))
    return {k: [v[1:] for v in sorted(rows, key=lambda r: r[0])] for k, rows in out.items()}


def _rounded(values: np.ndarray, precision: str) -> np.ndarray:
    if precision == "bf16":
        return values.astype(ml_dtypes.bfloat16).astype(values.dtype)
    rounded = BitRound(keepbits=int(precision.split(":")[1])).encode(values)  # an integer view
    return rounded.view(values.dtype).reshape(values.shape)


GENERATIONS = ["v1", "v2-frames", "v2-tags"]


@pytest.mark.parametrize("name", [f"{g}{suffix}" for g in GENERATIONS for suffix in (".zarr", ".h5")])
def test_a_stored_generation_reads_back_bit_exact(name):
    expected = _expected()
    path = FIXTURES / name
    assert verify(path) == []
    with spikestore.open(path) as run:
        assert run.metadata == {"fixture": f"format {name.rsplit('.', 1)[0]}"}
        assert sorted(run.streams) == sorted(expected)
        for key, rows in expected.items():
            s = run[key]
            assert len(s) == len(rows), key
            np.testing.assert_array_equal(s.steps, [r[1] for r in rows])
            np.testing.assert_array_equal(s.calls, [r[2] for r in rows])
            for i, (want, _, _) in enumerate(rows):
                got = s[i]
                if key in BF16_STREAMS:
                    want = want.view(ml_dtypes.bfloat16)
                elif key in LOSSY:
                    want = _rounded(want, LOSSY[key])
                assert got.dtype == want.dtype and got.shape == want.shape, (key, i)
                assert got.tobytes() == want.tobytes(), (key, i)
        assert run["output/sn"].dims == ("batch", "neuron")
        assert run["output/conv.0"].segments[0].encoding == "bits"
        assert run["v_seq/fc"].segments[0].encoding == "raw"
