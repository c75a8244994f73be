from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikestore import InvalidArgumentError
from spikestore._format import escape_layer, split_key, stream_node, unescape_layer


@given(st.text())
def test_layer_escaping_round_trips_and_gives_safe_node_names(layer):
    name = escape_layer(layer)
    assert unescape_layer(name) == layer
    assert name and "/" not in name and name not in (".", "..") and not name.startswith("__")
    assert name.isascii()


@pytest.mark.parametrize("layer,name", [("", "%"), ("1", "1"), ("features.0", "features.0"),
                                        ("a/b", "a%2Fb"), ("50%", "50%25"), (".", "%2E"),
                                        ("__x", "%5F_x"), ("层", "%E5%B1%82")])
def test_documented_escaping_examples(layer, name):
    assert escape_layer(layer) == name


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
