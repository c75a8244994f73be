"""The session and subject metadata of an NWB export: the store's defaults, the user's fields over them, checked.

An NWB file describes a *session* (``NWBFile`` fields: description, id,
experimenter, institution, ...) and its *subject* (``Subject`` fields:
subject_id, species, sex, age, ...). The exporter fills both from the store
(:func:`session_defaults`, :func:`subject_defaults`); the user's fields
replace those defaults field by field. Each user field is checked here,
before the store is read, against the form the NWB best practices and the
DANDI archive require (the rules ``nwbinspector --config dandi`` applies), so
that a file the archive would refuse is never written: a wrong field raises
:class:`~spikestore.errors.InvalidArgumentError` naming the field, the
form it needs and an example.

The command line reads the same fields from a JSON file
(:func:`read_metadata_file`: ``{"session": {...}, "subject": {...}}``) and
from its own flags (``docs/cli.md``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from spikestore.errors import InvalidArgumentError

__all__ = [
    "SESSION_FIELDS",
    "SUBJECT_FIELDS",
    "SYNTHETIC_SPECIES",
    "check_session",
    "check_subject",
    "read_metadata_file",
    "session_defaults",
    "subject_defaults",
]

#: NCBI Taxonomy's "synthetic construct" (taxon 32630), the subject species of a store's export
#: unless the user gives one: an artificial network is no organism, and the archive takes a taxonomy link.
SYNTHETIC_SPECIES = "http://purl.obolibrary.org/obo/NCBITaxon_32630"

_TEXT, _TEXTS, _TIME = "text", "list of text", "time"

#: ``NWBFile`` fields a user may give, and their kind.
SESSION_FIELDS: dict[str, str] = {
    "session_description": _TEXT, "session_id": _TEXT, "identifier": _TEXT, "session_start_time": _TIME,
    "experimenter": _TEXTS, "institution": _TEXT, "lab": _TEXT, "experiment_description": _TEXT,
    "keywords": _TEXTS, "related_publications": _TEXTS, "protocol": _TEXT, "data_collection": _TEXT,
    "stimulus_notes": _TEXT, "pharmacology": _TEXT, "surgery": _TEXT, "virus": _TEXT,
}

#: ``Subject`` fields a user may give, and their kind.
SUBJECT_FIELDS: dict[str, str] = {
    "subject_id": _TEXT, "species": _TEXT, "sex": _TEXT, "age": _TEXT, "date_of_birth": _TIME,
    "description": _TEXT, "genotype": _TEXT, "strain": _TEXT, "weight": _TEXT,
}

_SPECIES = re.compile(r"([A-Z][a-z]* [a-z]+)|(http://purl\.obolibrary\.org/obo/NCBITaxon_\d+)")
_DURATION = re.compile(r"P(?!$)(\d+(?:\.\d+)?Y)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?W)?(\d+(?:\.\d+)?D)?"
                       r"(T(?=\d)(\d+(?:\.\d+)?H)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?S)?)?")
_WEIGHT = re.compile(r"\d+(\.\d+)? (kg|g|mg|ug|μg|ng|pg)")
_SEXES = ("M", "F", "O", "U")
_C_ELEGANS = ("Caenorhabditis elegans", "http://purl.obolibrary.org/obo/NCBITaxon_6239")
_C_ELEGANS_SEXES = ("XO", "XX")


def session_defaults(name: str, created: datetime, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The session of a store's export: its name, its creation time, and its run metadata's ``task``."""
    return {
        "session_description": f"Spiking network activity recorded by spikestore ({name})",
        "session_start_time": created,
        "experiment_description": str(metadata.get("task", "spiking neural network training run")),
        "keywords": ["spiking neural network", "spikestore", "simulation"],
        "source_script": "spikestore",
    }


def subject_defaults(name: str, created: datetime) -> dict[str, Any]:
    """The subject of a store's export: the network, named after the store, "born" when recording starts."""
    return {
        "subject_id": name, "species": SYNTHETIC_SPECIES, "sex": "U", "date_of_birth": created,
        "description": "Artificial spiking neural network (not an animal)",
    }


def check_session(session: Mapping[str, Any] | None) -> dict[str, Any]:
    """The user's session fields, checked and normalised (a text where a list is wanted becomes a list of one)."""
    fields = _fields("session", session, SESSION_FIELDS, SUBJECT_FIELDS)
    if "/" in fields.get("session_id", ""):
        raise InvalidArgumentError(f"session field 'session_id' {fields['session_id']!r} contains '/', which the "
                                   "DANDI archive refuses (it builds paths from it): use '-' or '_' instead")
    return fields


def check_subject(subject: Mapping[str, Any] | None) -> dict[str, Any]:
    """The user's subject fields, checked against the forms the DANDI archive requires."""
    fields = _fields("subject", subject, SUBJECT_FIELDS, SESSION_FIELDS)
    species = fields.get("species")
    if species is not None and not _SPECIES.fullmatch(species):
        raise InvalidArgumentError(
            f"subject field 'species' {species!r} is neither a Latin binomial (e.g. 'Mus musculus', 'Homo sapiens') "
            "nor an NCBI taxonomy link (e.g. 'http://purl.obolibrary.org/obo/NCBITaxon_10090'), the forms NWB and "
            f"the DANDI archive take; for an artificial network leave it out (the default is {SYNTHETIC_SPECIES}, "
            "NCBI's 'synthetic construct')")
    sex = fields.get("sex")
    allowed = _C_ELEGANS_SEXES if species in _C_ELEGANS else _SEXES
    if sex is not None and sex not in allowed:
        raise InvalidArgumentError(f"subject field 'sex' is {sex!r}: give one of {', '.join(map(repr, allowed))}"
                                   + (" for C. elegans" if species in _C_ELEGANS else
                                      " (male, female, other, unknown)"))
    age = fields.get("age")
    if age is not None and not _is_age(age):
        raise InvalidArgumentError(
            f"subject field 'age' {age!r} is not an ISO 8601 duration: give e.g. 'P90D' (90 days), 'P2Y' (2 years), "
            "'PT3H' (3 hours), or a range 'P1D/P3D' ('P90Y/' for 90 years or older)")
    weight = fields.get("weight")
    if weight is not None and not _WEIGHT.fullmatch(weight):
        raise InvalidArgumentError(f"subject field 'weight' {weight!r} is not '<number> <unit>': give e.g. '2.3 g' "
                                   "(units kg, g, mg, ug, μg, ng, pg)")
    if "/" in fields.get("subject_id", ""):
        raise InvalidArgumentError(f"subject field 'subject_id' {fields['subject_id']!r} contains '/', which the "
                                   "DANDI archive refuses (it builds paths from it): use '-' or '_' instead")
    return fields


def read_metadata_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``session`` and ``subject`` fields of a JSON file ``{"session": {...}, "subject": {...}}``, checked.

    Either part may be left out. Raises :class:`~spikestore.errors.InvalidArgumentError` for a file that
    cannot be read, is not JSON, or holds anything else.
    """
    where = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read the NWB metadata file {where}: {exc}") from None
    except ValueError as exc:
        raise InvalidArgumentError(f"the NWB metadata file {where} is not JSON ({exc})") from None
    example = '{"session": {"session_id": "run-1"}, "subject": {"subject_id": "net-1"}}'
    if not isinstance(doc, dict) or set(doc) - {"session", "subject"}:
        extra = sorted(set(doc) - {"session", "subject"}) if isinstance(doc, dict) else None
        raise InvalidArgumentError(f"the NWB metadata file {where} must hold one JSON object with the keys "
                                   f"'session' and 'subject' (e.g. {example})"
                                   + (f", not {', '.join(map(repr, extra))}" if extra else ""))
    parts = []
    for part in ("session", "subject"):
        value = doc.get(part, {})
        if not isinstance(value, dict):
            raise InvalidArgumentError(f"{part!r} in the NWB metadata file {where} must be a JSON object of "
                                       f"{part} fields (e.g. {example}), not {type(value).__name__}")
        parts.append(value)
    return check_session(parts[0]), check_subject(parts[1])


def _fields(part: str, given: Mapping[str, Any] | None, known: Mapping[str, str],
            other: Mapping[str, str]) -> dict[str, Any]:
    """``given`` checked against ``known`` (field name -> kind); ``other``: the other part's fields, for a hint."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise InvalidArgumentError(f"{part} must be a dict of NWB {part} fields, not {type(given).__name__}")
    out: dict[str, Any] = {}
    for name, value in given.items():
        if name not in known:
            hint = (f"; {name!r} is a {'subject' if part == 'session' else 'session'} field: pass it there"
                    if name in other else "")
            raise InvalidArgumentError(f"unknown NWB {part} field {name!r}{hint}; the {part} fields are: "
                                       f"{', '.join(known)}")
        out[name] = _value(part, name, known[name], value)
    return out


def _value(part: str, name: str, kind: str, value: Any) -> Any:
    """One field's value in the form pynwb takes, or an error saying what to give."""
    if kind == _TIME:
        when = value
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                when = None
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise InvalidArgumentError(f"{part} field {name!r} is {value!r}: give a date and time with its time "
                                       "zone, a timezone-aware datetime or ISO 8601 text such as "
                                       "'2024-05-01T09:30:00+02:00'")
        return when
    texts = [value] if kind == _TEXTS and isinstance(value, str) else value
    if kind == _TEXTS and isinstance(texts, list | tuple) and texts \
            and all(isinstance(t, str) and t.strip() for t in texts):
        return list(texts)
    if kind == _TEXT and isinstance(value, str) and value.strip():
        return value
    want = "a non-empty text or a list of them" if kind == _TEXTS else "a non-empty text"
    raise InvalidArgumentError(f"{part} field {name!r} is {value!r}: give {want}")


def _is_age(age: str) -> bool:
    """``age`` is an ISO 8601 duration, or a range of two (``P1D/P3D``, an open end left empty: ``P90Y/``)."""
    if _DURATION.fullmatch(age):
        return True
    low, sep, high = age.partition("/")
    return bool(sep) and bool(low or high) and "/" not in high \
        and all(not end or _DURATION.fullmatch(end) for end in (low, high))
