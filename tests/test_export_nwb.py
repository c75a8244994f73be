"""NWB export that the field's tools accept: pynwb validates it, nwbinspector finds no CRITICAL or
BEST_PRACTICE_VIOLATION (and, with the session and subject metadata given, nothing CRITICAL under its DANDI
configuration), every value reads back, and the session and subject fields reach the file from the API and
the command line, or are refused with a message that says what to give."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
from spikestore.export import to_nwb

pynwb = pytest.importorskip("pynwb")
nwbinspector = pytest.importorskip("nwbinspector")

ROOT = Path(__file__).resolve().parent.parent
T, BATCH, NEURONS, STEPS, DT = 4, 2, 12, 6, 0.0005
SPARSE_STEPS = (0, 1, 3)  # a stream recorded at uneven steps keeps explicit timestamps

SESSION = {"session_description": "LIF network on digits, seed 0", "session_id": "digits-seed0",
           "experimenter": ["Doe, Jane", "Roe, Richard"], "institution": "University of Somewhere",
           "lab": "Spiking Lab", "session_start_time": "2024-05-01T09:30:00+02:00"}
SUBJECT = {"subject_id": "lif-net-0", "species": "Mus musculus", "sex": "O", "age": "P90D",
           "description": "A model of mouse V1 as a spiking network"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Multi-step spikes of two batch samples x 12 neurons, their voltages and a gradient norm every step,
    and a norm recorded at uneven steps."""
    path = tmp_path_factory.mktemp("nwb") / "run.zarr"
    g = torch.Generator().manual_seed(1)
    with spikestore.Store(path, metadata={"task": "nwb test"}) as st:
        for step in range(STEPS):
            st.set_step(step)
            st.append("output/lif", (torch.rand(T, BATCH, NEURONS, generator=g) < 0.2).float())
            st.append("v_seq/lif", torch.randn(T, BATCH, NEURONS, generator=g))
            st.append("grad_input/lif", torch.rand((), generator=g))
            if step in SPARSE_STEPS:
                st.append("grad_input/sparse", torch.rand((), generator=g))
        st.set_stream_info("output/lif", selection={"step_mode": "m", "batch_axis": 1})
        st.set_stream_info("v_seq/lif", selection={"step_mode": "m", "batch_axis": 1})
    return path


def findings(path: Path) -> tuple[list[str], list[str]]:
    """What the field's tools object to in the file at ``path``: pynwb's validation errors with nwbinspector's
    messages of importance BEST_PRACTICE_VIOLATION and above in its default configuration, and its messages
    of importance CRITICAL and above in its DANDI configuration (the file read once for both)."""
    from nwbinspector import Importance, inspect_nwbfile_object, load_config

    def said(messages) -> list[str]:
        return [f"{m.importance.name} {m.check_function_name}: {m.message}" for m in messages if m is not None]

    errors = [f"pynwb: {e}" for e in pynwb.validate(path=str(path))]
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        default = said(inspect_nwbfile_object(nwb, importance_threshold=Importance.BEST_PRACTICE_VIOLATION))
        dandi = said(inspect_nwbfile_object(nwb, config=load_config("dandi"), importance_threshold=Importance.CRITICAL))
    return errors + default, dandi


def docs_metadata() -> dict:
    """The metadata file that docs/cli.md shows (its one ```json block)."""
    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "docs" / "cli.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1
    return json.loads(blocks[0])


def test_default_export_validates_and_is_clean(store, tmp_path):
    out = to_nwb(store, tmp_path / "x.nwb", dt=DT)
    # the default subject is form-valid too (NCBI's "synthetic construct"): nothing CRITICAL for DANDI either
    assert findings(out) == ([], [])


def test_values_read_back(store, tmp_path):
    out = to_nwb(store, tmp_path / "x.nwb", dt=DT)
    run = spikestore.open(store)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        units = nwb.units
        assert units.resolution == DT
        table = units.to_dataframe()
        assert len(table) == BATCH * NEURONS
        assert units["batch"].data.dtype == np.uint8 and units["neuron"].data.dtype == np.uint8
        want = {(b, n): [] for b in range(BATCH) for n in range(NEURONS)}
        for step in range(STEPS):
            for t, b, n in zip(*np.nonzero(run["output/lif"][step]), strict=True):
                want[(int(b), int(n))].append((step * T + int(t)) * DT)
        got = {(int(row.batch), int(row.neuron)): list(row.spike_times) for row in table.itertuples()}
        assert got.keys() == want.keys()
        for unit, times in want.items():
            np.testing.assert_allclose(got[unit], times, rtol=0, atol=1e-12, err_msg=str(unit))
        series = nwb.processing["misc"]
        v = series["v_seq.lif"]  # every step recorded: evenly spaced rows, one per time bin
        assert v.timestamps is None and v.starting_time == 0.0 and v.rate == pytest.approx(1 / DT)
        np.testing.assert_array_equal(v.data[:], np.concatenate([run["v_seq/lif"][i] for i in range(STEPS)]))
        np.testing.assert_allclose(v.get_timestamps(), np.arange(STEPS * T) * DT, rtol=0, atol=1e-12)
        norm = series["grad_input.lif"]
        assert norm.timestamps is None
        np.testing.assert_allclose(norm.get_timestamps(), np.arange(STEPS) * DT, rtol=0, atol=1e-12)
        sparse = series["grad_input.sparse"]  # uneven steps: the times are written out
        assert sparse.rate is None
        np.testing.assert_allclose(sparse.timestamps[:], np.array(SPARSE_STEPS) * DT)
        np.testing.assert_array_equal(sparse.data[:], [run["grad_input/sparse"][i] for i in range(3)])
        assert nwb.subject.species == "http://purl.obolibrary.org/obo/NCBITaxon_32630"
        assert nwb.subject.subject_id == "run" and nwb.subject.sex == "U"
        assert json.loads(nwb.notes) == {"task": "nwb test"}


def test_session_and_subject_from_the_api_pass_dandi(store, tmp_path):
    out = to_nwb(store, tmp_path / "x.nwb", session=SESSION, subject=SUBJECT)
    assert findings(out) == ([], [])
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.session_description == SESSION["session_description"]
        assert nwb.session_id == "digits-seed0" and list(nwb.experimenter) == SESSION["experimenter"]
        assert (nwb.institution, nwb.lab) == (SESSION["institution"], SESSION["lab"])
        assert nwb.session_start_time == datetime(2024, 5, 1, 7, 30, tzinfo=UTC)
        s = nwb.subject
        assert (s.subject_id, s.species, s.sex, s.age, s.description) == tuple(
            SUBJECT[k] for k in ("subject_id", "species", "sex", "age", "description"))
        assert s.date_of_birth is None  # the user's age, not the default birth at the session's start


def test_command_line_metadata_reaches_the_file(store, tmp_path):
    """The file docs/cli.md shows, with flags over it: the archive's CRITICAL checks pass."""
    from click.testing import CliRunner

    from spikestore.cli import main

    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(docs_metadata()), encoding="utf-8")
    out = tmp_path / "x.nwb"
    r = CliRunner().invoke(main, ["export", str(store), str(out), "--nwb-metadata", str(meta),
                                  "--experimenter", "Roe, Richard", "--experimenter", "Doe, Jane",
                                  "--subject-id", "net-7", "--sex", "F", "--age", "P1D/P3D", "--dt", str(DT)])
    assert r.exit_code == 0, r.output
    assert findings(out) == ([], [])
    doc = docs_metadata()
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert list(nwb.experimenter) == ["Roe, Richard", "Doe, Jane"]  # the flags win over the file
        assert nwb.session_id == doc["session"]["session_id"]
        assert nwb.institution == doc["session"]["institution"]
        assert (nwb.subject.subject_id, nwb.subject.sex, nwb.subject.age) == ("net-7", "F", "P1D/P3D")
        assert nwb.subject.species == doc["subject"]["species"]
        assert nwb.units.resolution == DT


@pytest.mark.parametrize(("session", "subject", "message"), [
    (None, {"species": "mouse"}, r"'species' 'mouse' is neither a Latin binomial.*'Mus musculus'.*NCBITaxon"),
    (None, {"sex": "male"}, r"'sex' is 'male': give one of 'M', 'F', 'O', 'U'"),
    (None, {"age": "90 days"}, r"'age' '90 days' is not an ISO 8601 duration: give e.g. 'P90D'"),
    (None, {"subject_id": "a/b"}, r"'subject_id' 'a/b' contains '/'"),
    (None, {"weight": "20"}, r"'weight' '20' is not '<number> <unit>'"),
    (None, {"species": "Mus musculus", "speces": "x"}, r"unknown NWB subject field 'speces'.*species, sex"),
    ({"species": "Mus musculus"}, None, r"'species' is a subject field: pass it there"),
    ({"session_id": "a/b"}, None, r"'session_id' 'a/b' contains '/'"),
    ({"experimenter": ["Doe, Jane", 3]}, None, r"'experimenter' is .*: give a non-empty text or a list of them"),
    ({"session_start_time": "2024-05-01T09:30:00"}, None, r"'session_start_time'.*with its time zone"),
    ("Doe", None, r"session must be a dict of NWB session fields, not str"),
])
def test_bad_metadata_is_refused_before_anything_is_written(store, tmp_path, session, subject, message):
    out = tmp_path / "x.nwb"
    with pytest.raises(spikestore.InvalidArgumentError, match=message):
        to_nwb(store, out, session=session, subject=subject)
    assert list(tmp_path.iterdir()) == []


def test_command_line_refuses_bad_metadata_and_nwb_options_elsewhere(store, tmp_path):
    from click.testing import CliRunner

    from spikestore.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["export", str(store), str(tmp_path / "x.nwb"), "--species", "in silico"])
    assert r.exit_code == 2 and "'species' 'in silico' is neither a Latin binomial" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"session": {}, "subjects": {}}', encoding="utf-8")
    r = runner.invoke(main, ["export", str(store), str(tmp_path / "x.nwb"), "--nwb-metadata", str(bad)])
    assert r.exit_code == 2 and "keys 'session' and 'subject'" in r.output and "'subjects'" in r.output
    bad.write_text("{not json", encoding="utf-8")
    r = runner.invoke(main, ["export", str(store), str(tmp_path / "x.nwb"), "--nwb-metadata", str(bad)])
    assert r.exit_code == 2 and "is not JSON" in r.output
    r = runner.invoke(main, ["export", str(store), str(tmp_path / "x.npz"), "--species", "Mus musculus",
                             "--dt", "0.01"])
    assert r.exit_code == 2 and "--dt, --species: NWB export only" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]
