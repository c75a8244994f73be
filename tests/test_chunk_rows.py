"""A cold random read decodes only the rows it needs, and returns exactly what a whole decode gives.

``StoreReader.rows`` (through ``Segment.chunk_rows``, which ``s[i]`` uses)
expands only the wanted rows of a gap-coded spike chunk the first time the
chunk is read (``spikestore.codecs._spike_rows``); every other chunk, and a
chunk read again, is decoded whole and cached. A partial decode reads the same
chunk bytes as a whole one, so these tests compare the partial read with
the whole decode for every record, across densities (every spike codec
mode), record sizes, padded rows and dtypes, on both backends, and check
that damage is refused the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest

import spikestore
from spikestore import verify
from spikestore._read.reader import StoreReader
from spikestore.backends import open_backend
from spikestore.codecs import _spike_rows
from spikestore.codecs._chunk import codec_for
from spikestore.codecs._identity import ChunkIdentity
from spikestore.codecs._spike_rows import BLOCK, decode_spike_rows
from spikestore.codecs._spikes import MODES, encode_spikes
from spikestore.codecs._spikes_decode import _HEADER, decode_spikes
from spikestore.errors import ChecksumError, DamagedStoreError

# Densities that pick every mode: zeros, pcodec (< 1.2%), gaps8 with many escapes (~1.5%), gaps8, bitmap.
DENSITIES = [0.0, 0.002, 0.015, 0.05, 0.1, 0.3, 1.0]


def _chunk(rng: np.random.Generator, records: int, shape: tuple[int, ...], p: float) -> np.ndarray:
    """Packed bits of ``records`` records of ``shape`` at density ``p`` (record-varying, like real layers)."""
    rate = np.clip(p * rng.uniform(0.0, 2.0, (records,) + (1,) * len(shape)), 0, 1)
    bits = rng.random((records, *shape)) < rate
    return np.packbits(bits, axis=-1, bitorder="little")


@pytest.mark.parametrize("p", DENSITIES)
@pytest.mark.parametrize(("records", "shape"), [(8192, (8, 32)), (300, (3, 28)), (37, (1, 13)), (5, (700,)),
                                                (2000, (10,))])
def test_every_record_of_a_chunk_reads_as_in_the_whole_decode(p, records, shape):
    rng = np.random.default_rng(int(p * 1000) + records)
    packed = _chunk(rng, records, shape, p)
    codec = codec_for("bits", np.dtype(np.uint8), row_bits=shape[-1])
    base = ChunkIdentity.of({"array": "seg000000"}, "output/x", rows=5 * records, chunk_records=records)
    data = codec.encode(packed)
    identity = dataclasses.replace(base, tags=(0, 0, 0, 0, base.chunk_tag(4, records, data)))  # chunk 4 of 5
    whole = codec.decode(data, packed.shape, np.uint8, identity=identity, chunk=4)
    np.testing.assert_array_equal(whole, packed)
    step = max(1, records // 600)  # every record of the small chunks, ~600 spread over the large ones
    for r in [*range(0, records, step), records - 1]:
        got, is_whole = codec.decode_rows(data, packed.shape, np.uint8, r, r + 1, identity=identity, chunk=4)
        np.testing.assert_array_equal(got[r:r + 1] if is_whole else got, packed[r:r + 1])
    for lo, hi in [(0, records), (records // 3, records // 2), (records - 1, records), (0, 0)]:
        got, is_whole = codec.decode_rows(data, packed.shape, np.uint8, lo, hi, identity=identity, chunk=4)
        np.testing.assert_array_equal(got[lo:hi] if is_whole else got, packed[lo:hi])


def test_the_densities_cover_every_mode():
    rng = np.random.default_rng(0)
    seen = {MODES[encode_spikes(_chunk(rng, 8192, (8, 32), p))[1] & 0x7F] for p in DENSITIES}
    assert seen == set(MODES) - {"neurons"}  # (a rate per neuron: tests/test_spike_neurons.py)
    escaped = encode_spikes(_chunk(rng, 8192, (8, 32), 0.015).reshape(-1))  # (flat: the gap modes only)
    assert escaped[1] == 1 and len(escaped) > _HEADER.size + 16 + 1  # gaps8 with escapes


def test_wanted_rows_across_block_boundaries():
    # Rows whose spikes straddle the BLOCK-gap sums, and a chunk with one long silent stretch.
    rng = np.random.default_rng(5)
    packed = _chunk(rng, 4000, (64,), 0.1)
    packed[1000:3000] = 0
    enc = encode_spikes(packed)
    positions = np.flatnonzero(np.unpackbits(packed.reshape(-1), bitorder="little"))
    for k in range(BLOCK - 2, positions.size, BLOCK):
        row = int(positions[k]) // (8 * 8)
        for lo, hi in [(row, row + 1), (row - 1, row + 2), (row, min(4000, row + 700))]:
            got, whole = decode_spike_rows(enc, lo, hi, 8, packed.size)
            assert not whole
            np.testing.assert_array_equal(got.reshape(-1, 8), packed[lo:hi])


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_cold_reads_match_whole_chunks_in_stores(tmp_path, monkeypatch, backend):
    path = tmp_path / ("s.zarr" if backend == "zarr" else "s.h5")
    expanded = []
    expand = _spike_rows._expand
    monkeypatch.setattr(_spike_rows, "_expand", lambda *a: expanded.append(1) or expand(*a))
    rng = np.random.default_rng(2)
    streams = {  # key: (records, dtype, density or None for raw floats)
        "output/sparse": ((4, 30), np.float32, 0.005), "output/mid": ((8, 32), np.float32, 0.1),
        "output/escapes": ((2, 100), np.float32, 0.015), "output/dense": ((16,), np.float32, 0.4),
        "output/bool": ((3, 13), np.bool_, 0.1), "output/u8": ((40,), np.uint8, 0.05),
        "v/f32": ((6, 5), np.float32, None), "v/f64": ((3,), np.float64, None),
    }
    written: dict[str, list[np.ndarray]] = {k: [] for k in streams}
    with spikestore.Store(path, chunk_bytes=512) as store:
        for _ in range(120):
            for key, (shape, dtype, p) in streams.items():
                rec = rng.standard_normal(shape) if p is None else rng.random(shape) < p * rng.uniform(0, 2)
                rec = rec.astype(dtype)
                store.append(key, rec, encoding="raw" if p is None else "bits")
                written[key].append(rec)
    with spikestore.open(path) as run:
        for key, recs in written.items():
            s = run[key]
            seg = s.segments[0]
            whole = seg.decode_rows(np.concatenate([seg.chunk(c) for c in range(seg.nchunks)])[:len(s)])
            np.testing.assert_array_equal(whole, np.stack(recs))
            for i in range(len(s)):
                run.refresh()  # nothing cached, nothing seen: every read is cold
                np.testing.assert_array_equal(s[i], recs[i], err_msg=f"{key}[{i}]")
            assert s[len(s) // 2].dtype == recs[0].dtype
    # Zarr's gap-coded chunks were read in part; HDF5 stores bits as zstd bitmaps, always decoded whole.
    assert (len(expanded) > 200) if backend == "zarr" else not expanded


def test_a_chunk_read_again_is_decoded_whole_and_cached(tmp_path):
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(3)
    with spikestore.Store(path) as store:
        for _ in range(3000):
            store.append("output/x", (rng.random((8, 32)) < 0.1).astype(np.float32))
    reader = StoreReader(open_backend(path, backend=None, writable=False), path)
    with spikestore.open(path) as run:
        seg = run["output/x"].segments[0]
        args = (seg.node, 0, seg.codec, (seg.chunk_records, 8, 4), np.dtype(np.uint8), "test")
        whole = seg.chunk(0)
    first = reader.rows(args[0], 0, 10, 11, *args[2:], identity=seg.identity)
    assert first.shape == (1, 8, 4) and not first.flags.writeable
    calls = []
    decode = seg.codec.decode
    seg.codec.decode = lambda *a, **k: calls.append(1) or decode(*a, **k)  # type: ignore[method-assign]
    np.testing.assert_array_equal(reader.rows(args[0], 0, 20, 22, *args[2:], identity=seg.identity), whole[20:22])
    np.testing.assert_array_equal(reader.rows(args[0], 0, 30, 31, *args[2:], identity=seg.identity), whole[30:31])
    assert calls == [1]  # the second read decoded it whole, the third came from the cache
    np.testing.assert_array_equal(first, whole[10:11])
    reader.close()


def _damaged_gaps_chunk() -> bytes:
    """A gaps8 chunk whose gaps point past its end (what a crafted chunk with a valid checksum could hold)."""
    packed = np.zeros(4096, np.uint8)
    packed[::7] = 1
    enc = bytearray(encode_spikes(packed))
    assert enc[1] == 1
    _, _, n = _HEADER.unpack_from(enc)
    enc[2:10] = (n // 2).to_bytes(8, "little")  # claims half the bytes: its spikes overrun
    return bytes(enc)


def test_a_partial_read_refuses_what_a_whole_decode_refuses():
    bad = _damaged_gaps_chunk()
    with pytest.raises(ChecksumError, match="out of range"):
        decode_spikes(bad, expected=2048)
    with pytest.raises(ChecksumError, match="out of range"):
        decode_spike_rows(bad, 0, 1, 8, 2048)
    with pytest.raises(ChecksumError, match="declares"):  # the size is checked before anything is allocated
        decode_spike_rows(bad, 0, 1, 8, 1 << 40)


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_a_damaged_chunk_is_damage_for_a_cold_read_and_for_verify(tmp_path, backend):
    path = tmp_path / ("s.zarr" if backend == "zarr" else "s.h5")
    rng = np.random.default_rng(4)
    with spikestore.Store(path) as store:
        for _ in range(3000):
            store.append("output/x", (rng.random((8, 32)) < 0.1).astype(np.float32))
    with spikestore.open(path) as run:
        seg = run["output/x"].segments[0]
    if backend == "zarr":
        chunk = path / seg.node / "c.0.0.0"
        flipped = bytearray(chunk.read_bytes())
        flipped[len(flipped) // 2] ^= 0x10
        chunk.write_bytes(bytes(flipped))
    else:
        with h5py.File(path, "r+") as f:
            mask, data = f[seg.node].id.read_direct_chunk((0, 0, 0))
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0x10
            f[seg.node].id.write_direct_chunk((0, 0, 0), bytes(flipped), filter_mask=mask)
    with spikestore.open(path) as run, pytest.raises(DamagedStoreError, match="chunk 0 of output/x/seg000000"):
        run["output/x"][5]
    assert any("output/x" in p and "chunk 0" in p for p in verify(path))


@pytest.mark.parametrize("name", ["v1.zarr", "v1.h5"])
def test_stores_written_before_read_the_same_cold(name):
    path = Path(__file__).resolve().parent / "fixtures" / "stores" / name
    with spikestore.open(path) as run:
        for key in run.streams:
            s = run[key]
            whole = [seg.decode_rows(np.concatenate([seg.chunk(c) for c in range(seg.nchunks)])[:seg.count])
                     for seg in s.segments if seg.count]
            for seg, records in zip([g for g in s.segments if g.count], whole, strict=True):
                for j in range(seg.count):
                    run.refresh()
                    got = s[seg.start + j]
                    assert got.tobytes() == records[j].tobytes() and got.dtype == records[j].dtype, (key, j)
