"""distmeta_envs.cache: the cache folder's rules, whole-file writes, and a cache that cannot
be written costing nothing but a rebuild."""

from pathlib import Path

from distmeta_envs.cache import cache_folder, read_cached, write_cached


def test_the_folder_is_the_variable_else_xdg_else_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTMETA_CACHE_DIR", str(tmp_path / "c"))
    assert cache_folder() == tmp_path / "c"
    monkeypatch.setenv("DISTMETA_CACHE_DIR", "")
    assert cache_folder() is None
    monkeypatch.delenv("DISTMETA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg" / "distmeta"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_folder() == tmp_path / "home" / ".cache" / "distmeta"


def test_written_files_read_back_whole_with_nothing_left_beside_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTMETA_CACHE_DIR", str(tmp_path / "new"))
    assert read_cached("a.json") is None
    write_cached("a.json", b"1")
    write_cached("a.json", b"22")
    assert read_cached("a.json") == b"22"
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["a.json"]


def test_no_cache_or_an_unwritable_one_keeps_nothing_and_raises_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTMETA_CACHE_DIR", "")
    write_cached("a.json", b"1")
    assert read_cached("a.json") is None
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder would be")
    monkeypatch.setenv("DISTMETA_CACHE_DIR", str(Path(blocked) / "cache"))
    write_cached("a.json", b"1")
    assert read_cached("a.json") is None
