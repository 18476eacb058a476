import json
import os

import jsonschema
import pytest

from conformance.report import schema
from conformance.report.schema import atomic_write, dumps, json_schema, load, validate

from .conftest import tiny_run


def test_result_validates_against_the_json_schema(tiny_result):
    jsonschema.Draft202012Validator.check_schema(json_schema())
    jsonschema.validate(tiny_result, json_schema())
    assert len(tiny_result["cases"]) == 16 * 2 * 2 * 2


def test_same_seed_and_versions_give_byte_identical_json(tiny_result):
    assert dumps(tiny_run()) == dumps(tiny_result)


def test_json_has_no_timestamps_and_round_trips(tiny_result):
    text = dumps(tiny_result)
    assert json.loads(text) == tiny_result
    for word in ("time", "date", "host"):
        assert word not in json.loads(text)["environment"]


def test_validate_names_the_bad_field(tiny_result):
    bad = json.loads(dumps(tiny_result))
    bad["cases"][3]["lockstep"]["bitwise_equal"] = -1
    with pytest.raises(ValueError, match="cases/3/lockstep/bitwise_equal"):
        validate(bad)
    with pytest.raises(ValueError, match="schema_version"):
        validate({**tiny_result, "schema_version": 99})


def test_load_refuses_non_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load(path)


def test_atomic_write_killed_before_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "baseline.json"
    atomic_write(target, "old\n")

    def killed(src, dst):
        raise KeyboardInterrupt  # the process dies between writing the temporary file and the rename

    monkeypatch.setattr(schema.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, "new but never complete\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["baseline.json"]  # the temporary file is cleaned up
