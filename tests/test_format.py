from __future__ import annotations

import hashlib
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from spikestore import FormatError, InvalidArgumentError
from spikestore._format import (
    escape_layer,
    join_key,
    segment_array_name,
    segment_array_number,
    split_key,
    stream_node,
    unescape_layer,
)
from spikestore._format.names import MAX_NAME_BYTES, is_hashed_layer, unbounded_stream_node


@given(st.text())
def test_layer_escaping_round_trips_and_gives_safe_node_names(layer):
    name = escape_layer(layer)
    if not is_hashed_layer(name):  # (names escaping past 255 bytes are bounded by a hash: one way)
        assert unescape_layer(name) == layer
    assert name and "/" not in name and name not in (".", "..") and not name.startswith("__")
    assert name.isascii()


@pytest.mark.parametrize("layer,name", [("", "%"), ("1", "1"), ("features.0", "features.0"),
                                        ("a/b", "a%2Fb"), ("50%", "50%25"), (".", "%2E"),
                                        ("__x", "%5F_x"), ("层", "%E5%B1%82")])
def test_documented_escaping_examples(layer, name):
    assert escape_layer(layer) == name


@given(st.integers(min_value=0, max_value=999_999))
def test_segment_names_parse_back_to_their_number(number):
    name = segment_array_name(number)
    assert name == f"seg{number:06d}"  # docs/format.md: "seg" and six digits
    assert segment_array_number(name) == number


@pytest.mark.parametrize("name", ["seg", "seg12", "seg0000001", "Seg000001", "seg00000x", "step", " seg000001"])
def test_names_that_are_no_segment_name_are_refused(name):
    with pytest.raises(FormatError, match="not a segment array's name"):
        segment_array_number(name)


@pytest.mark.parametrize(("quantity", "layer"), [("output", "1"), ("v_seq", "a/b"), ("output", "")])
def test_join_key_is_the_inverse_of_split_key(quantity, layer):
    assert split_key(join_key(quantity, layer)) == (quantity, layer)


def test_keys_split_at_the_first_slash_only():
    assert split_key("output/a/b") == ("output", "a/b")
    assert split_key("output/") == ("output", "")
    assert stream_node("v_seq/x y") == "v_seq/x%20y"


@pytest.mark.parametrize("key", ["output", "/1", "__x/1", "a b/1", ".x/1", 3])
def test_bad_keys_are_rejected_with_a_spikestore_error(key):
    with pytest.raises(InvalidArgumentError):
        split_key(key)


def test_reserved_metadata_name_is_escaped_and_refused_as_quantity(tmp_path):
    import numpy as np

    import spikestore

    assert escape_layer("zarr.json") == "%7Aarr.json" and unescape_layer("%7Aarr.json") == "zarr.json"
    with pytest.raises(InvalidArgumentError):
        split_key("zarr.json/1")
    with spikestore.Store(tmp_path / "r.zarr") as store:
        store.append("output/zarr.json", np.ones(3))
        store.append("output/ok", np.zeros(3))
    run = spikestore.open(tmp_path / "r.zarr")
    np.testing.assert_array_equal(run["output/zarr.json"][0], np.ones(3))
    np.testing.assert_array_equal(run["output/ok"][0], np.zeros(3))


# -- bounded layer names -----------------------------------------------------
# Every code point, lone surrogates included (hypothesis leaves those out by default).
_ANY_TEXT = st.text(st.characters(exclude_categories=()))
_LONG_TEXT = st.text(st.characters(exclude_categories=()), min_size=86, max_size=400)


def _old_rule(layer: str) -> str:
    """escape_layer as it was before the bound (valid UTF-8 names only)."""
    if layer == "":
        return "%"
    name = quote(layer, safe="._-")
    if name[0] in "._" or name == "zarr.json":
        name = f"%{ord(name[0]):02X}{name[1:]}"
    return name


@given(_ANY_TEXT)
def test_layer_names_are_bounded_safe_and_round_trip_unless_hashed(layer):
    name = escape_layer(layer)
    assert name.isascii() and len(name) <= MAX_NAME_BYTES
    assert name and "/" not in name and name not in (".", "..") and not name.startswith("__")
    if is_hashed_layer(name):
        assert len(layer.encode("utf-8", "surrogatepass")) * 3 > MAX_NAME_BYTES
        assert name.endswith(hashlib.sha256(layer.encode("utf-8", "surrogatepass")).hexdigest())
        with pytest.raises(FormatError, match="stream document"):
            unescape_layer(name)
    else:
        assert unescape_layer(name) == layer


@given(st.text())
def test_names_within_the_bound_are_escaped_exactly_as_before(layer):
    old = _old_rule(layer)
    assert (escape_layer(layer) == old) == (len(old) <= MAX_NAME_BYTES)
    assert unbounded_stream_node(f"output/{layer}") == (None if len(old) <= MAX_NAME_BYTES else f"output/{old}")


@given(_ANY_TEXT, _ANY_TEXT)
def test_distinct_layers_never_share_a_group_name(a, b):
    assume(a != b)
    assert escape_layer(a) != escape_layer(b)


@given(_LONG_TEXT, _ANY_TEXT, _ANY_TEXT)
def test_long_layers_sharing_a_prefix_get_distinct_bounded_names(prefix, a, b):
    assume(a != b)
    x, y = escape_layer(prefix + a), escape_layer(prefix + b)
    assert x != y


@given(_ANY_TEXT)
def test_only_bounded_names_contain_the_hash_mark(layer):
    name = escape_layer(layer)
    assert ("%~" in name) == (len(_old_rule_any(layer)) > MAX_NAME_BYTES)


def _old_rule_any(layer: str) -> str:
    if layer == "":
        return "%"
    name = quote(layer.encode("utf-8", "surrogatepass"), safe="._-")
    return f"%{ord(name[0]):02X}{name[1:]}" if name[0] in "._" or name == "zarr.json" else name


@pytest.mark.parametrize("layer,name", [
    ("a\ud800b", "a%ED%A0%80b"),
    ("层" * 100, "%E5%B1%82" * 21 + "%~" + hashlib.sha256(("层" * 100).encode()).hexdigest()),
    ("a" * 255, "a" * 255),
    ("a" * 256, "a" * 189 + "%~" + hashlib.sha256(b"a" * 256).hexdigest()),
    ("a" * 188 + "层" * 30, "a" * 188 + "%~" + hashlib.sha256(("a" * 188 + "层" * 30).encode()).hexdigest()),
])
def test_documented_bounded_name_examples(layer, name):
    assert escape_layer(layer) == name
    assert len(name) <= MAX_NAME_BYTES


# -- record layouts ----------------------------------------------------------------------
from spikestore._format.layout import RecordLayout  # noqa: E402


def test_a_layout_round_trips_through_its_selection_document():
    layout = RecordLayout("m", every=2, start=4, stop=None, batch=[0, 3], neurons={"slice": [0, 8, 2]})
    doc = layout.to_selection()
    assert doc["batch_axis"] == 1 and doc["step_mode"] == "m"
    assert RecordLayout.from_selection(doc) == layout


@pytest.mark.parametrize("selection,shape,dims,kind", [
    ({"step_mode": "m", "batch_axis": 1}, (4, 8, 10), ("time", "batch", "neuron"), "m"),
    ({"step_mode": "m", "batch_axis": 1}, (4, 8, 2, 3), ("time", "batch", "neuron_0", "neuron_1"), "m"),
    ({"step_mode": "s", "batch_axis": 0}, (8, 10), ("batch", "neuron"), "s"),
    ({"step_mode": "m", "batch_axis": 0}, (4, 8, 10), ("dim_0", "dim_1", "dim_2"), "m"),  # inconsistent
    (None, (8, 10), ("dim_0", "dim_1"), "s"),
    (None, (), (), "n"),
    ({"step_mode": "m", "batch_axis": 1}, (3,), ("dim_0",), "n"),  # reduced by function_on_output
])
def test_record_axes_come_from_the_monitors_step_mode(selection, shape, dims, kind):
    layout = RecordLayout.from_selection(selection)
    assert layout.dims(shape) == dims
    assert layout.kind(shape) == kind


def test_original_indices_label_only_fully_known_selections():
    layout = RecordLayout("s", batch={"slice": [2, 6, 2]}, neurons={"slice": [1, None, None]})
    got = layout.original_indices((2, 5))
    assert list(got) == ["batch"] and got["batch"].tolist() == [2, 4]
    assert RecordLayout("s", batch=[5, 1]).original_indices((2, 3))["batch"].tolist() == [5, 1]
    assert RecordLayout("s", batch=[5, 1]).original_indices((3, 3)) == {}  # sizes disagree


# -- bfloat16 -----------------------------------------------------------------------------
def test_bfloat16_rounding_matches_ml_dtypes_and_round_trips():
    import ml_dtypes
    import numpy as np

    from spikestore._format import dtypes

    x = np.random.default_rng(0).normal(size=10_000).astype(np.float32) * 1e3
    x[:4] = [np.nan, np.inf, -np.inf, -0.0]
    bits = dtypes.float32_to_bfloat16_bits(x)
    want = x.astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(bits[4:], want[4:].view(np.uint16))
    assert np.isnan(dtypes.bfloat16_bits_to_float(bits[:1], np.dtype(np.float32))[0])
    back = dtypes.bfloat16_bits_to_float(bits, np.dtype(np.float32))
    np.testing.assert_array_equal(back[1:], want[1:].astype(np.float32))
    assert dtypes.numpy_dtype("bfloat16") == np.dtype(ml_dtypes.bfloat16)
    mask = dtypes.bfloat16_binary_mask(np.array([0, 0x3F80, 0], np.uint16))
    assert mask.tolist() == [False, True, False]
    assert dtypes.bfloat16_binary_mask(np.array([0, 0x4000], np.uint16)) is None
