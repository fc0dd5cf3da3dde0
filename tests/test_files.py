"""Atomic replacement used by every report and plot writer."""

from __future__ import annotations

import pytest

from sumtune.files import replacing, write_text_atomically


def test_replacing_keeps_suffix(tmp_path):
    target = tmp_path / "plot.png"
    with replacing(target) as temporary:
        assert temporary.parent == tmp_path
        assert temporary.suffix == ".png"
        assert temporary.name.startswith(".plot.")
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["plot.png"]


def test_concurrent_writers_distinct_names(tmp_path):
    # Two tune workers writing the same plot at once each rename their own file.
    target = tmp_path / "trials.csv"
    with replacing(target) as first, replacing(target) as second:
        assert first != second
        first.write_text("first", encoding="utf-8")
        second.write_text("second", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "first"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["trials.csv"]


def test_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk full"), replacing(target) as temporary:
        temporary.write_text("half", encoding="utf-8")
        raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.md"]


def test_write_text_utf8(tmp_path):
    target = tmp_path / "config.yaml"
    write_text_atomically(target, "summary: café\n")
    assert target.read_bytes() == "summary: café\n".encode()
