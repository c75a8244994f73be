"""Regenerate tests/fixtures/: encoded spike chunks whose decoding the tests assert.

Run only when the on-disk bytes are meant to change (a new codec version):
the point of the fixtures is that an accidental change fails the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikestore.codecs._spikes import MODES, encode_spikes

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

#: Chunks of real-looking layers, coded neuron by neuron (mode 4): name: (chunk shape of the
#: unpacked bits (records, ..., neurons), seed, whether the rows are padded (row_bits given)).
NEURON_CASES = {
    "neurons": ((48, 4, 8, 32), 7, False),  # multi-step records (time, batch, neurons)
    "neurons-padded": ((300, 6, 20), 8, True),  # step-by-step records (batch, neurons), 20 of 24 bits real
    # multi-step records of a convolution (time, batch, channel, row, column), a rate per channel and column
    "neurons-channels": ((16, 4, 4, 4, 6, 12), 9, True),
}

CASES = {  # name: (bits, firing probability, seed, row length or None)
    "bitmap": (4099, 0.4, 1, None),
    "gaps8": (20_003, 0.06, 2, None),
    "gaps-pcodec": (50_001, 0.005, 3, None),
    "zeros": (77, 0.0, 4, None),
    "gaps8-rows": (28 * 700, 0.06, 5, 28),
    "gaps-pcodec-rows": (10 * 5000, 0.005, 6, 10),
}


def lif_like(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Spikes with a rate per neuron (most nearly silent), lowered for a step after each spike.

    The time axis is axis 1 of multi-step chunks (4 axes or more), else the record axis; chunks of 6 axes
    have a rate per channel (axis 3) and column (axis 5).
    """
    rng = np.random.default_rng(seed)
    rate = 0.5 * rng.random((shape[3], 1, shape[5]) if len(shape) == 6 else shape[-1]) ** 3
    steps = np.moveaxis(np.zeros(shape, dtype=bool), 1 if len(shape) >= 4 else 0, 0)
    for t in range(steps.shape[0]):
        p = np.where(steps[t - 1], 0.2 * rate, rate) if t else rate
        steps[t] = rng.random(steps.shape[1:]) < p
    return np.moveaxis(steps, 0, 1 if len(shape) >= 4 else 0)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (shape, seed, padded) in NEURON_CASES.items():
        packed = np.packbits(lif_like(shape, seed), axis=-1, bitorder="little")
        row = shape[-1] if padded else None
        enc = encode_spikes(packed, row_bits=row)
        assert MODES[enc[1]] == "neurons", (name, enc[1])
        (OUT / f"spikes-{name}.bin").write_bytes(enc)
        np.save(OUT / f"spikes-{name}.expected.npy", packed, allow_pickle=False)  # (in its chunk shape)
        print(f"{name}: {packed.size} bytes -> {len(enc)} bytes")
        if row is not None:
            (OUT / f"spikes-{name}.row_bits").write_text(str(row))
    for name, (n, p, seed, row) in CASES.items():
        bits = np.random.default_rng(seed).random(n) < p
        if row is None:
            packed = np.packbits(bits, bitorder="little")
        else:
            packed = np.packbits(bits.reshape(-1, row), axis=-1, bitorder="little").reshape(-1)
        enc = encode_spikes(packed, row_bits=row)
        mode = MODES[enc[1] & 0x7F] + ("-rows" if enc[1] & 0x80 else "")
        assert mode == name, (name, mode)
        (OUT / f"spikes-{name}.bin").write_bytes(enc)
        np.save(OUT / f"spikes-{name}.expected.npy", packed, allow_pickle=False)
        print(f"{name}: {n} bits -> {len(enc)} bytes")
        if row is not None:
            (OUT / f"spikes-{name}.row_bits").write_text(str(row))


if __name__ == "__main__":
    main()
