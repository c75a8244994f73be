"""docs/format.md specifies the spike codec well enough to reimplement it from the page alone.

``tests/format_decoder.py`` is a decoder written from §6.1 with numpy, zstd
and pcodec, and no spikestore: it decodes every spike fixture (the codec
fixtures and every spike chunk of the frozen stores) to the fixtures'
expected bytes, decodes fresh chunks of every mode (escapes included) to
what was encoded, decodes the page's worked chunks, and refuses the damage
spikestore refuses. The page's §8 and §10.5 readers escape layer names as
spikestore does, the 255-byte bound included.
"""

from __future__ import annotations

import ast
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
import pytest
from format_decoder import SpikeChunkError, decode_spike_chunk, drop_identity_frame

from spikestore import DamagedStoreError, FormatError
from spikestore._format.names import escape_layer

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "format.md"
FIXTURES = ROOT / "tests" / "fixtures"
DECODER = ROOT / "tests" / "format_decoder.py"
#: What the decoder may import: the page promises numpy, zstd (numcodecs' here) and pcodec.
ALLOWED = {"__future__", "struct", "numpy", "numcodecs.zstd", "pcodec"}


def _spikestore_codec(row_bits: int | None = None, level: int = 1) -> numcodecs.abc.Codec:
    """spikestore's codec through its public registration (numcodecs' entry point)."""
    config = {"id": "spikestore.spikes", "level": level}
    return numcodecs.get_codec(config if row_bits is None else {**config, "row_bits": row_bits})


def test_the_decoder_imports_nothing_but_numpy_zstd_and_pcodec():
    tree = ast.parse(DECODER.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
        elif isinstance(node, ast.Name):
            assert node.id not in ("__import__", "importlib"), "the decoder imports dynamically"
    assert imported <= ALLOWED, imported - ALLOWED
    assert not any(name.split(".")[0] == "spikestore" for name in imported)


# -- the codec fixtures ----------------------------------------------------------------------
CODEC_FIXTURES = sorted(FIXTURES.glob("spikes-*.bin"))


@pytest.mark.parametrize("path", CODEC_FIXTURES, ids=lambda p: p.stem)
def test_every_codec_fixture_decodes_to_its_expected_bytes(path):
    want = np.load(path.with_name(path.name.replace(".bin", ".expected.npy")), allow_pickle=False)
    got = decode_spike_chunk(path.read_bytes(), want.size)
    assert got.dtype == np.uint8 and got.tobytes() == want.tobytes()


def test_the_codec_fixtures_cover_every_mode():
    assert {path.read_bytes()[1] for path in CODEC_FIXTURES} == {0, 1, 2, 3, 4, 0x81, 0x82}


# -- the frozen stores ------------------------------------------------------------------------
def _expected_records() -> dict[str, dict[int, np.ndarray]]:
    out: dict[str, dict[int, np.ndarray]] = {}
    with np.load(FIXTURES / "stores" / "expected.npz", allow_pickle=False) as z:
        for name in z.files:
            if name.count("|") == 1:
                key, i = name.rsplit("|", 1)
                out.setdefault(key, {})[int(i)] = z[name]
    return out


def _spike_chunks(store: Path):
    """``(stream key, segment entry, chunk number, chunk file)`` of every committed spike chunk of ``store``."""
    root = json.loads((store / "zarr.json").read_text())["attributes"]["spikestore"]
    for key in root["streams"]:
        quantity, layer = key.split("/", 1)
        node = store / quantity / escape_layer(layer)
        doc = json.loads((node / "zarr.json").read_text())["attributes"]["spikestore"]
        for seg in doc["segments"]:
            if seg["codec"]["id"] != "spikestore.spikes" or seg["count"] == 0:
                continue
            meta = json.loads((node / seg["array"] / "zarr.json").read_text())
            sep = meta["chunk_key_encoding"]["configuration"]["separator"]
            for c in range(-(-seg["count"] // seg["chunk_records"])):
                name = sep.join(["c", str(c), *["0"] * len(seg["stored_shape"])])
                yield key, seg, c, node / seg["array"] / name


@pytest.mark.parametrize("store", sorted((FIXTURES / "stores").glob("*.zarr")), ids=lambda p: p.name)
def test_every_spike_chunk_of_the_frozen_stores_decodes_to_the_appended_records(store):
    expected = _expected_records()
    modes = set()
    for key, seg, c, path in _spike_chunks(store):
        data = path.read_bytes()
        # §6: the chunk file ends in the CRC-32C (4 bytes, little-endian) of what precedes it.
        assert int.from_bytes(data[-4:], "little") == google_crc32c.value(data[:-4]), path
        records, stored = seg["chunk_records"], seg["stored_shape"]
        got = decode_spike_chunk(data[:-4], records * int(np.prod(stored)))
        modes.add(drop_identity_frame(data[:-4])[1])
        got = got.reshape(records, *stored)
        held = min(records, seg["count"] - c * records)
        for j in range(held):
            value = expected[key][seg["start"] + c * records + j]
            want = np.packbits(value.reshape(seg["shape"]) != 0, axis=-1, bitorder="little")
            assert got[j].tobytes() == want.tobytes(), (key, seg["array"], c, j)
        assert not got[held:].any(), (key, c)  # rows past the records are zero
    assert modes, "the store holds no spike chunk"


# -- fresh chunks of every mode ---------------------------------------------------------------
def _packed(bits: np.ndarray, row_bits: int | None) -> np.ndarray:
    if row_bits is None:
        return np.packbits(bits, bitorder="little")
    return np.packbits(bits.reshape(-1, row_bits), axis=-1, bitorder="little").reshape(-1)


def _bits(n: int, p: float, seed: int, silence: slice | None = None) -> np.ndarray:
    bits = np.random.default_rng(seed).random(n) < p
    if silence is not None:
        bits[silence] = False  # a long silent stretch: gaps of 255 and more
    return bits


CASES = {  # name: (bits, row length, mode spikestore picks)
    "gaps8 with escapes": (_bits(40_000, 0.03, 1, slice(1000, 9000)), None, 1),
    "gaps8 rows with escapes": (_bits(10 * 4000, 0.03, 2, slice(500, 5000)), 10, 0x81),
    "gaps8 rows of 28, a gap of exactly 255": (np.isin(np.arange(28 * 2000), [5, 261, 9000, 9001]) |
                                               _bits(28 * 2000, 0.02, 3, slice(0, 12000)), 28, 0x81),
    "pcodec": (_bits(80_000, 0.002, 4), None, 2),
    "pcodec rows": (_bits(12 * 6000, 0.002, 5), 12, 0x82),
    "bitmap rows": (_bits(10 * 2000, 0.4, 6), 10, 0),
    "zeros": (np.zeros(7 * 64, dtype=bool), 7, 3),
    "padding bit set": (None, 10, 1),
}


@pytest.mark.parametrize("name", CASES)
def test_fresh_chunks_of_every_mode_decode_to_what_was_encoded(name):
    bits, row_bits, mode = CASES[name]
    if bits is None:  # a row whose padding holds a one: the gaps number every bit (no flag)
        packed = _packed(_bits(10 * 4000, 0.03, 7), 10)
        packed[1] |= 0x80
    else:
        packed = _packed(bits, row_bits)
    encoded = bytes(_spikestore_codec(row_bits).encode(packed))
    assert encoded[1] == mode, hex(encoded[1])
    assert decode_spike_chunk(encoded, packed.size).tobytes() == packed.tobytes()


def _lif_like(shape: tuple[int, ...], time_axis: int, seed: int, per: tuple[int, ...] | None = None) -> np.ndarray:
    """Spikes with a rate per neuron (one neuron silent, one always firing), lower after a spike.

    ``per``: the shape of the rates, broadcast over the trailing axes of a time step (default: the last axis).
    """
    rng = np.random.default_rng(seed)
    rate = 0.5 * rng.random(per or shape[-1]) ** 3
    rate.reshape(-1)[:2] = 0.0, 1.0
    steps = np.moveaxis(np.zeros(shape, dtype=bool), time_axis, 0)
    for t in range(steps.shape[0]):
        steps[t] = rng.random(steps.shape[1:]) < (np.where(steps[t - 1], 0.3 * rate, rate) if t else rate)
    return np.moveaxis(steps, 0, time_axis)


NEURON_CASES = {  # name: (chunk of unpacked bits, row_bits given to the codec)
    "multi-step records": (_lif_like((24, 5, 6, 40), 1, 1), None),
    "multi-step records of channels (a probability per channel and column)":
        (_lif_like((16, 4, 4, 4, 6, 12), 1, 5, per=(4, 1, 12)), 12),
    "step-by-step padded records": (_lif_like((200, 4, 13), 0, 2), 13),
    "one-sample records": (_lif_like((800, 24), 0, 3), None),
    "a last chunk, its later rows zero": (np.concatenate([_lif_like((120, 8, 16), 0, 4),
                                                          np.zeros((80, 8, 16), bool)]), None),
}


@pytest.mark.parametrize("name", NEURON_CASES)
def test_fresh_neuron_chunks_decode_to_what_was_encoded(name):
    bits, row_bits = NEURON_CASES[name]
    packed = np.packbits(bits, axis=-1, bitorder="little")  # in chunk shape: the codec sees the records' axes
    encoded = bytes(_spikestore_codec(row_bits, level=2).encode(packed))  # the level that tries mode 4
    assert encoded[1] == 4
    assert decode_spike_chunk(encoded, packed.size).tobytes() == packed.tobytes()
    if "channel" in name:
        assert struct.unpack_from("<I", encoded, 22)[0] > 1  # D: the probabilities are shared


def test_small_chunks_of_any_density_decode_to_what_was_encoded():
    rng = np.random.default_rng(8)
    modes = set()
    for trial in range(60):
        row_bits = [None, 3, 10, 17][trial % 4]
        rows = int(rng.integers(1, 200))
        bits = rng.random(rows * (row_bits or 8)) < [0.0, 0.005, 0.05, 0.3, 0.9][trial % 5]
        packed = _packed(bits, row_bits)
        encoded = bytes(_spikestore_codec(row_bits).encode(packed))
        modes.add(encoded[1])
        assert decode_spike_chunk(encoded, packed.size).tobytes() == packed.tobytes(), trial
    assert len(modes) >= 3, modes


# -- the page's worked chunks -----------------------------------------------------------------
def _documented_chunks() -> list[bytes]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### 6.1 The spike codec"):text.index("## 7.")]
    section = section[section.index("Two examples."):]
    blocks = re.findall(r"```\n(.*?)```", section, flags=re.S)
    return [bytes.fromhex("".join(re.split(r"\s{2,}", line)[0] for line in block.splitlines()))
            for block in blocks]


def test_the_documented_chunks_decode_as_the_page_says():
    first, second = _documented_chunks()
    assert len(first) == 42 and decode_spike_chunk(first, 4).tobytes() == bytes.fromhex("01020800")
    got = decode_spike_chunk(second, 40)
    assert np.flatnonzero(np.unpackbits(got, bitorder="little")).tolist() == [2, 300]
    for chunk, n in ((first, 4), (second, 40)):  # and spikestore reads them the same
        assert bytes(_spikestore_codec().decode(chunk)) == decode_spike_chunk(chunk, n).tobytes()


# -- damage both decoders refuse --------------------------------------------------------------
def _damaged(chunk: bytes) -> dict[str, bytes]:
    n = int.from_bytes(chunk[2:10], "little")
    out = {
        "no header": chunk[:9],
        "another length": chunk[:2] + (n + 1).to_bytes(8, "little") + chunk[10:],
        "mode 0x80": chunk[:1] + b"\x80" + chunk[2:],
        "mode 0x83": chunk[:1] + b"\x83" + chunk[2:],
        "mode and version apart": (b"\x01" if chunk[0] == 2 else b"\x02") + chunk[1:],
    }
    if chunk[1] & 0x7F != 2:  # (a pcodec file ends where pcodec stops reading: see the test below)
        out["bytes after the payload"] = chunk + b"\x00"
    if chunk[1] != 3:
        out["truncated"] = chunk[:-1]
    if chunk[1] & 0x7F == 1:
        at = 14 if chunk[1] & 0x80 else 10
        out["more gaps than bits"] = chunk[:at] + (8 * n + 1).to_bytes(8, "little") + chunk[at + 8:]
    if chunk[1] & 0x80:
        out["row length a multiple of 8"] = chunk[:10] + (16).to_bytes(4, "little") + chunk[14:]
    if chunk[1] == 4:  # the layout's S, R, K, D, L, M at bytes 10-37
        s, r, k, d, lag, m = struct.unpack_from("<IIIIIQ", chunk, 10)
        for what, layout in {"no lag": (s, r, k, d, 0, m), "R not in S bytes": (s, 8 * s + 1, k, d, lag, m),
                             "D not dividing K": (s, r, k, k + 1, lag, m),
                             "more rows than the chunk": (s, r, k, d, lag, n // (k * s) + 1),
                             "too many neurons": (s, r, n, 1, lag, 0)}.items():
            out[what] = chunk[:10] + struct.pack("<IIIIIQ", *layout) + chunk[38:]
        coded = 46 + struct.unpack_from("<Q", chunk, 38)[0]  # header, layout and probabilities come first
        out["coded bits not starting with 0"] = chunk[:coded] + b"\x01" + chunk[coded + 1:]
    return out


DAMAGED = [(path, what, damaged) for path in CODEC_FIXTURES for what, damaged in _damaged(path.read_bytes()).items()]


@pytest.mark.parametrize(("path", "what", "damaged"), DAMAGED, ids=[f"{p.stem}-{w}" for p, w, _ in DAMAGED])
def test_damage_spikestore_refuses_is_refused_by_the_page_decoder_too(path, what, damaged):
    n = int.from_bytes(path.read_bytes()[2:10], "little")
    with pytest.raises(DamagedStoreError):
        _spikestore_codec().decode(damaged, out=np.empty(n, np.uint8))
    with pytest.raises(SpikeChunkError):
        decode_spike_chunk(damaged, n)


@pytest.mark.parametrize("path", CODEC_FIXTURES, ids=lambda p: p.stem)
def test_a_newer_codec_version_is_refused_as_a_newer_format(path):
    chunk = path.read_bytes()
    n = int.from_bytes(chunk[2:10], "little")
    newer = b"\x03" + chunk[1:]
    with pytest.raises(FormatError) as refused:
        _spikestore_codec().decode(newer, out=np.empty(n, np.uint8))
    assert not isinstance(refused.value, DamagedStoreError)
    with pytest.raises(SpikeChunkError, match="newer"):
        decode_spike_chunk(newer, n)

# -- layer names in the page's readers --------------------------------------------------------
NAMES = ["", "fc1", "features.0", "A-B_c.d", "a~b", "-x", "a/b", "%", "50%", "a b", "x:y", "módulo", "层1", ".",
         "..", ".hidden", "_x", "__init__", "zarr.json", "a\ud800b", "a" * 255, "a" * 256, "层" * 100,
         "a" * 188 + "层" * 30, "a" * 187 + "/" * 40, "." + "b" * 300]


def _documented_functions(heading: str, end: str) -> dict:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(heading):text.index(end) if end else None]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[-1]
    ns: dict = {}
    exec(compile(ast.Module(body=[node for node in ast.parse(code).body
                                  if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef)],
                            type_ignores=[]), str(DOC), "exec"), ns)
    return ns


def test_the_documented_readers_escape_layer_names_as_spikestore_does():
    zarr_reader = _documented_functions("## 8. Worked example", "## 9.")
    h5_reader = _documented_functions("### 10.5 Reading with h5py alone", "")
    for layer in NAMES:
        name = escape_layer(layer)
        assert len(name.encode()) <= 255
        assert zarr_reader["escape_layer"](layer) == name, layer
        assert h5_reader["stream_group"](f"output/{layer}") == f"output/{name}", layer


def test_bytes_after_a_pcodec_file_are_ignored_by_both_decoders():
    # §6.1, mode 2: pcodec stops reading at the end of its file, so what follows it changes nothing.
    chunk = (FIXTURES / "spikes-gaps-pcodec.bin").read_bytes()
    want = np.load(FIXTURES / "spikes-gaps-pcodec.expected.npy", allow_pickle=False)
    longer = chunk + b"\x00\xff"
    assert decode_spike_chunk(longer, want.size).tobytes() == want.tobytes()
    assert bytes(_spikestore_codec().decode(longer)) == want.tobytes()


# -- what the page's opening promises a reader ------------------------------------------------
PLAIN_ZARR = """
import sys
for name in ("torch", "numba", "llvmlite"):
    sys.modules[name] = None  # an install without the record extra: importing them fails
import numpy as np
import zarr
array = zarr.open_array(sys.argv[1], mode="r")
assert any(codec.to_dict()["name"] == "spikestore.spikes" for codec in array.metadata.codecs)
np.save(sys.argv[2], array[:], allow_pickle=False)
assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "numba", "llvmlite") and sys.modules[m]]
"""


@pytest.mark.slow
def test_plain_zarr_reads_spike_arrays_with_spikestore_installed_and_no_torch(tmp_path):
    # The opening: zarr-python plus spikestore's codec, registered by `pip install spikestore`, which
    # holds neither torch nor numba. The chunks zarr decodes are the ones the page decoder decodes.
    store = FIXTURES / "stores" / "v1.zarr"
    seg = store / "output" / "fc" / "seg000000"
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_ZARR)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(script), str(seg), str(tmp_path / "a.npy")], check=True, env=env)
    got = np.load(tmp_path / "a.npy")
    doc = json.loads((seg.parent / "zarr.json").read_text())["attributes"]["spikestore"]["segments"][0]
    records, stored = doc["chunk_records"], doc["stored_shape"]
    files = [path for key, entry, _, path in _spike_chunks(store) if key == "output/fc" and entry == doc]
    want = np.concatenate([decode_spike_chunk(path.read_bytes()[:-4], records * int(np.prod(stored)))
                           .reshape(records, *stored) for path in files])
    assert got.tobytes() == want[:got.shape[0]].tobytes() and got.shape[0] >= doc["count"]
