"""Regenerate tests/fixtures/: encoded spike chunks whose decoding the tests assert.

Run only when the on-disk bytes are meant to change (a new codec version):
the point of the fixtures is that an accidental change fails the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikestore.spike_codec import MODES, encode_spikes

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

CASES = {  # name: (bits, firing probability, seed)
    "bitmap": (4099, 0.4, 1),
    "gaps8": (20_003, 0.06, 2),
    "gaps-pcodec": (50_001, 0.005, 3),
    "zeros": (77, 0.0, 4),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (n, p, seed) in CASES.items():
        bits = np.random.default_rng(seed).random(n) < p
        packed = np.packbits(bits, bitorder="little")
        enc = encode_spikes(packed)
        assert MODES[enc[1]] == name, (name, MODES[enc[1]])
        (OUT / f"spikes-{name}.bin").write_bytes(enc)
        np.save(OUT / f"spikes-{name}.expected.npy", packed, allow_pickle=False)
        print(f"{name}: {n} bits -> {len(enc)} bytes")


if __name__ == "__main__":
    main()
