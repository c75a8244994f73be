"""Inputs that the writer thread could not store, caught by ``append``.

Each case is either refused on the calling thread, before anything is queued,
with a :class:`~spikestore.SpikestoreError` that names the stream, the step and
the fix, or (valid data: long names, negative/conjugate views) stored and read
back. Either way a second stream recorded alongside keeps recording, the
store closes cleanly and reads back intact, on both backends.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import spikestore
from spikestore import InvalidArgumentError, InvalidValueError
from spikestore._format.names import MAX_NAME_BYTES, escape_layer

OK = "output/ok"
pytestmark = pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")


def _group_names(path: Path, quantity: str) -> list[str]:
    """Names of the stream groups under ``quantity``, as stored on disk."""
    if path.suffix == ".zarr":
        return sorted(n for n in os.listdir(path / quantity) if n != "zarr.json")
    import h5py

    with h5py.File(path, "r") as f:
        return sorted(f[quantity].keys())


def _run_beside(store_path: Path, action: Callable[[spikestore.Store], Any]) -> spikestore.Run:
    """Record ``OK`` at steps 0 and 1 around ``action(store)`` at step 0, close, reopen.

    Asserts that ``OK`` read back intact and that the writer closed cleanly.
    """
    store = spikestore.Store(store_path)
    try:
        store.append(OK, np.array([1.0, 0.0, 1.0], np.float32))
        action(store)
        store.set_step(1)
        store.append(OK, np.array([0.25, 0.5, 2.0]))
        store.flush()
    finally:
        store.close()
    run = spikestore.open(store_path)
    assert run.writer["status"] == "closed"
    ok = run[OK]
    assert len(ok) == 2
    np.testing.assert_array_equal(ok[0], np.array([1.0, 0.0, 1.0], np.float32))
    np.testing.assert_array_equal(ok[1], np.array([0.25, 0.5, 2.0]))
    np.testing.assert_array_equal(ok.steps, [0, 1])
    return run


def _refused(store_path: Path, error: type[Exception], pattern: str,
             action: Callable[[spikestore.Store], Any]) -> None:
    def refuse(store: spikestore.Store) -> None:
        with pytest.raises(error, match=pattern):
            action(store)

    run = _run_beside(store_path, refuse)
    assert run.streams == [OK]  # nothing of the refused record reached the store


# -- names ------------------------------------------------------------------------------

def test_a_layer_name_escaping_past_255_bytes_is_stored_under_a_bounded_name(store_path):
    long_a = "层" * 100  # 900 bytes escaped
    long_b = "层" * 99 + "楼"  # same 189-byte prefix, other hash
    values = {long_a: np.arange(3.0), long_b: np.arange(4.0)}

    def record(store):
        for layer, v in values.items():
            store.append(f"output/{layer}", v)

    run = _run_beside(store_path, record)
    for layer, v in values.items():
        np.testing.assert_array_equal(run[f"output/{layer}"][0], v)
        assert run[f"output/{layer}"].layer == layer
    names = _group_names(store_path, "output")
    assert len(names) == 3 and all(len(n.encode()) <= MAX_NAME_BYTES for n in names)
    assert escape_layer(long_a) in names and escape_layer(long_b) in names


def test_a_layer_name_with_a_lone_surrogate_is_stored_and_read_back(store_path):
    key = "output/a\ud800b"
    run = _run_beside(store_path, lambda store: store.append(key, np.full(2, 7.0)))
    assert key in run.streams
    np.testing.assert_array_equal(run[key][0], np.full(2, 7.0))
    assert "a%ED%A0%80b" in _group_names(store_path, "output")


def test_a_quantity_name_over_255_bytes_is_refused(store_path):
    _refused(store_path, InvalidArgumentError, r"stream 'q{256}/a'.*255 bytes.*shorter quantity",
             lambda store: store.append("q" * 256 + "/a", np.ones(2)))


# -- negative and conjugate views ---------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_a_negative_view_is_resolved_and_stored(store_path, dtype):
    value = torch.tensor([1 + 2j, 3 - 4j], dtype=dtype).conj().imag  # the neg bit is set
    assert value.is_neg()
    run = _run_beside(store_path, lambda store: store.append("output/neg", value))
    np.testing.assert_array_equal(run["output/neg"][0], np.array([-2.0, 4.0]))
    assert run["output/neg"][0].dtype == value.resolve_neg().numpy().dtype


def test_a_binary_negative_view_is_packed_as_bits(store_path):
    value = torch.tensor([1 - 1j, 1 + 0j, 2 - 1j]).conj().imag  # float32 0/1 with the neg bit
    assert value.is_neg() and value.dtype == torch.float32
    run = _run_beside(store_path, lambda store: store.append("output/spk", value))
    np.testing.assert_array_equal(run["output/spk"][0], np.array([1.0, 0.0, 1.0], np.float32))


def test_a_conjugate_view_is_resolved_and_stored(store_path):
    value = torch.tensor([1 + 2j, 3 - 4j]).conj()
    assert value.is_conj()
    run = _run_beside(store_path, lambda store: store.append("output/conj", value, encoding="raw"))
    np.testing.assert_array_equal(run["output/conj"][0], np.array([1 - 2j, 3 + 4j], np.complex64))


# -- dtypes without an exact portable on-disk type -----------------------------------------

def test_complex32_is_refused_with_the_conversion_to_make(store_path):
    value = torch.zeros(3, dtype=torch.complex32)
    _refused(store_path, InvalidValueError,
             r"stream 'output/c', step 0: dtype torch\.complex32.*t\.to\(torch\.complex64\)",
             lambda store: store.append("output/c", value))


@pytest.mark.parametrize("dtype,fix", [(np.longdouble, "float64"), (np.clongdouble, "complex128")])
def test_longdouble_is_refused_with_the_conversion_to_make(store_path, dtype, fix):
    value = np.zeros(3, dtype)
    if value.dtype.itemsize <= np.dtype(fix).itemsize:
        pytest.skip(f"{value.dtype} is plain {fix} on this platform and is stored as such")
    _refused(store_path, InvalidValueError,
             rf"stream 'output/x', step 0: dtype {value.dtype}.*value\.astype\(np\.{fix}\)",
             lambda store: store.append("output/x", value))
    _refused(store_path.with_name("scalar" + store_path.suffix), InvalidValueError,
             rf"dtype {value.dtype}", lambda store: store.append("output/x", value[0]))


# -- steps ------------------------------------------------------------------------------

@pytest.mark.parametrize("step,pattern", [
    (2**63, r"step 9223372036854775808 is out of range.*2\*\*63 - 1"),
    (-1, r"step -1 is out of range.*0 <= step"),
    (1.5, r"not float \(1\.5\).*never rounded.*int\(step\)"),
    (np.float64(2.0), r"not float64.*never rounded"),
    (True, r"not bool"),
])
def test_a_step_the_int64_index_cannot_hold_is_refused_by_append(store_path, step, pattern):
    _refused(store_path, InvalidArgumentError, r"stream 'output/x': .*" + pattern,
             lambda store: store.append("output/x", np.ones(2), step=step))


@pytest.mark.parametrize("step,pattern", [
    (2**63, r"set_step: step 9223372036854775808 is out of range"),
    (-1, r"set_step: step -1 is out of range"),
    (1.5, r"set_step: step must be an int .*not float \(1\.5\)"),
    (False, r"set_step: step must be an int, not bool"),
])
def test_a_step_the_int64_index_cannot_hold_is_refused_by_set_step(store_path, step, pattern):
    def refuse(store):
        store.set_step(3)
        with pytest.raises(InvalidArgumentError, match=pattern):
            store.set_step(step)
        assert store.step == 3  # unchanged
        store.set_step(0)

    run = _run_beside(store_path, refuse)
    assert run.streams == [OK]


class _Index:
    def __index__(self) -> int:
        return 7


def test_integral_steps_of_every_kind_and_the_largest_step_are_accepted(store_path):
    def record(store):
        store.append("output/s", np.ones(1), step=np.int64(4))
        store.append("output/s", np.ones(1), step=np.uint8(5))
        store.append("output/s", np.ones(1), step=_Index())
        store.append("output/s", np.ones(1), step=2**63 - 1)
        store.set_step(np.int32(0))

    run = _run_beside(store_path, record)
    np.testing.assert_array_equal(run["output/s"].steps, [4, 5, 7, 2**63 - 1])


# -- dimensions -------------------------------------------------------------------------

@pytest.mark.parametrize("ndim", [32, 40, 64])
@pytest.mark.parametrize("kind", ["bits", "raw", "tensor"])
def test_a_record_with_more_dimensions_than_can_be_read_back_is_refused(store_path, ndim, kind):
    shape = (1,) * (ndim - 1) + (2,)
    value = {"bits": np.ones(shape, np.float32), "raw": np.full(shape, 0.5),
             "tensor": torch.ones(shape)}[kind]
    _refused(store_path, InvalidValueError,
             rf"stream 'output/x', step 0: the record has {ndim} dimensions; at most 31.*reshape",
             lambda store: store.append("output/x", value))


@pytest.mark.parametrize("kind", ["bits", "raw"])
def test_a_record_of_31_dimensions_is_stored_and_read_back(store_path, kind):
    shape = (1,) * 30 + (3,)
    value = np.ones(shape, np.float32) if kind == "bits" else np.full(shape, 0.5)
    run = _run_beside(store_path, lambda store: store.append("output/x", value))
    got = run["output/x"][0]
    assert got.shape == shape
    np.testing.assert_array_equal(got, value)


def test_refusals_name_the_stream_and_step_in_spikestore_errors(tmp_path):
    with spikestore.Store(tmp_path / "r.zarr") as store:
        store.set_step(12)
        with pytest.raises(spikestore.SpikestoreError, match=re.escape("stream 'output/y', step 12")):
            store.append("output/y", torch.zeros(2, dtype=torch.complex32))


# -- byte order -------------------------------------------------------------------------------

def _stored_arrays(path: Path, key: str) -> list[np.ndarray]:
    """The segment arrays of stream ``key`` as plain h5py (with hdf5plugin) or zarr-python reads them."""
    if path.suffix == ".zarr":
        import zarr

        group = zarr.open_group(path / key, mode="r")
        return [group[name][...] for name in sorted(n for n in group.array_keys() if n.startswith("seg"))]
    import h5py
    import hdf5plugin  # noqa: F401  (registers the filters the chunks are encoded with)

    with h5py.File(path, "r") as f:
        return [f[key][name][...] for name in sorted(n for n in f[key] if n.startswith("seg"))]


@pytest.mark.parametrize("dtype", [">i4", ">f8", ">c16", ">u2", "<i4"])
def test_records_of_either_byte_order_are_stored_little_endian_and_read_right_everywhere(store_path, dtype):
    values = [np.arange(4, dtype=dtype) * 3 + 7, np.array([-1, 0, 300, 2**15 - 1]).astype(dtype)]
    with spikestore.Store(store_path) as store:
        for step, value in enumerate(values):
            store.append("v/x", value, step=step)
    assert spikestore.verify(store_path) == []
    run = spikestore.open(store_path)
    stream = run["v/x"]
    assert len(stream) == 2 and len(stream.segments) == 1  # one segment for one logical dtype
    for i, value in enumerate(values):
        np.testing.assert_array_equal(stream[i], value)
        assert stream[i].dtype == value.dtype.newbyteorder("=")
    (stored,) = _stored_arrays(store_path, "v/x")
    assert stored.dtype.byteorder in "<|="  # what third-party readers see: little endian, the values right
    np.testing.assert_array_equal(stored, np.stack(values))


def test_byte_orders_mixed_in_one_stream_share_a_segment(store_path):
    with spikestore.Store(store_path) as store:
        store.append("v/x", np.arange(3, dtype=">i8"), step=0)
        store.append("v/x", np.arange(3, dtype="<i8"), step=1)
    stream = spikestore.open(store_path)["v/x"]
    assert len(stream.segments) == 1
    np.testing.assert_array_equal(stream[:], [[0, 1, 2], [0, 1, 2]])


# -- tensors without values -------------------------------------------------------------------

def test_a_meta_tensor_is_refused_with_what_to_do(store_path):
    value = torch.empty(3, device="meta")
    _refused(store_path, InvalidValueError,
             r"stream 'output/m', step 0: .*meta device.*no values",
             lambda store: store.append("output/m", value))


def test_a_monitor_recording_a_meta_tensor_raises_at_the_hook(store_path):
    from spikingjelly.activation_based import neuron

    from spikestore import monitor as ss

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), neuron.IFNode())
    with spikestore.Store(store_path) as store:
        ss.OutputMonitor(net, neuron.IFNode, store=store,
                         function_on_output=lambda s: torch.empty_like(s, device="meta"))
        store.set_step(5)
        with pytest.raises(InvalidValueError, match=r"stream 'output/1', step 5: .*meta device"):
            net(torch.rand(2, 4))
    run = spikestore.open(store_path)
    assert run.writer["status"] == "closed"
    assert all(len(run[key]) == 0 for key in run.streams)  # the monitor lists its stream; nothing reached it
