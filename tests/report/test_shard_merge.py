import pytest

from conformance.cli import main
from conformance.report.cases import Shard, build_cases, parse_shard
from conformance.report.document import merge_results
from conformance.report.schema import dumps

from .conftest import TINY, TINY_FLAGS, tiny_run


def test_shards_partition_the_cases():
    cases = build_cases(TINY)
    slices = [Shard(i, 3).select(cases) for i in (1, 2, 3)]
    ids = [c.id for s in slices for c in s]
    assert sorted(ids) == sorted(c.id for c in cases) and len(ids) == len(set(ids))


def test_merged_shards_are_byte_identical_to_the_unsharded_run(tiny_result):
    shards = [tiny_run(shard=Shard(i, 3)) for i in (3, 1, 2)]  # any order
    assert dumps(merge_results(shards)) == dumps(tiny_result)


def test_merge_command_writes_the_unsharded_file(tmp_path, tiny_result):
    paths = []
    for i in (1, 2):
        out = tmp_path / f"shard{i}"
        assert main(["run", *TINY_FLAGS, "--shard", f"{i}/2", "--out", str(out), "--no-html"]) == 0
        paths.append(str(out / "drift.json"))
    assert main(["merge", *paths, "--out", str(tmp_path / "merged"), "--no-html"]) == 0
    assert (tmp_path / "merged" / "drift.json").read_text() == dumps(tiny_result)


def test_merge_refuses_an_incomplete_or_repeated_set():
    one, two = tiny_run(shard=Shard(1, 2)), tiny_run(shard=Shard(2, 2))
    with pytest.raises(ValueError, match=r"need shards 1..2 once each, got \[1\]"):
        merge_results([one])
    with pytest.raises(ValueError, match=r"got \[1, 1\]"):
        merge_results([one, one])
    with pytest.raises(ValueError, match="differ in 'settings'"):
        merge_results([one, {**two, "settings": {**two["settings"], "seed": 1}}])


@pytest.mark.parametrize("text", ["0/3", "4/3", "1-3", "a/b", ""])
def test_bad_shard_spec_is_refused_by_name(text):
    with pytest.raises(ValueError, match=repr(text).replace("(", r"\(")):
        parse_shard(text)
