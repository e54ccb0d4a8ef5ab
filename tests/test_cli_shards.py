"""`selfsup shards`: packs a source, prints its table, continues or refuses with one line."""

from selfsup.cli import main
from selfsup.data.shards import load_index


def test_shards_packs_digits_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["shards", "digits", "--out", str(out), "--max-count", "500", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    header, rule, row = printed.splitlines()[-3:]
    assert header.split() == ["shards", "samples", "skipped", "on", "disk", "seconds", "index"]
    assert row.split()[:3] == ["4", "1797", "0"] and row.endswith(str(out / "index.json"))
    assert [entry.count for entry in load_index(out).shards] == [500, 500, 500, 297]
    # Again: nothing to do, and it says so.
    assert main(["shards", "digits", "--out", str(out), "--max-count", "500", "--workers", "0"]) == 0
    assert "already holds the complete shards of digits; nothing to do" in capsys.readouterr().out


def test_shards_max_size_in_units(tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["shards", "digits", "--out", str(out), "--max-size", "2MB", "--workers", "0"]) == 0
    index = load_index(out)
    assert index.max_size == 2_000_000 and all(entry.bytes <= 2_000_000 for entry in index.shards)


def test_bad_max_size_exits_2_with_one_line(tmp_path, capsys):
    assert main(["shards", "digits", "--out", str(tmp_path / "shards"), "--max-size", "12XB"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == ("selfsup shards: error: --max-size: '12XB' is not a size; use e.g. 1GB, 500MB, 64KB, 1GiB or a number of bytes")
    assert not (tmp_path / "shards").exists()


def test_other_settings_on_the_same_out_exit_2(tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["shards", "digits", "--out", str(out), "--max-count", "1000", "--workers", "0"]) == 0
    assert main(["shards", "digits", "--out", str(out), "--max-count", "500", "--workers", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "max_count 1000 (now 500)" in error and "another output folder" in error
