"""adla.io: atomic writes keep the old file on failure and leave no temporary behind; JSON errors name the file."""

from __future__ import annotations

import os

import pytest

from adla.errors import AdlaError
from adla.io import atomic_path, read_json, write_json, write_text


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "out.txt", "old")
    with pytest.raises(RuntimeError, match="crash"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_write_replaces_the_file_with_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "sub" / "a.json", {"x": [1, 2]})
    finally:
        os.umask(old)
    assert read_json(path) == {"x": [1, 2]}
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    write_json(path, {"x": 3})
    assert read_json(path) == {"x": 3} and sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_json_errors_name_the_file(tmp_path):
    with pytest.raises(AdlaError, match="results file not found") as err:
        read_json(tmp_path / "none.json", "results file")
    assert "none.json" in str(err.value)
    bad = write_text(tmp_path / "bad.json", "{not json")
    with pytest.raises(AdlaError, match="not valid JSON") as err:
        read_json(bad)
    assert "bad.json" in str(err.value)


def test_a_file_in_the_way_of_the_folder_is_named(tmp_path):
    blocker = write_text(tmp_path / "blocker", "a file")
    with pytest.raises(AdlaError, match="is a file, not a folder") as err:
        write_json(blocker / "deeper" / "x.json", {})
    assert "blocker" in str(err.value)
