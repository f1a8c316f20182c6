"""core.provenance: digests, change lists, atomic writes and the build-folder lock."""

import json
import os
import subprocess
import sys

import pytest

from core.config import parse_config
from core.paths import ROOT
from core.provenance import (
    BuildLock,
    LockedError,
    changed,
    describe_changes,
    read_json,
    sha256_file,
    sha256_json,
    source_digest,
    write_bytes,
    write_json,
)


def test_digests(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    assert sha256_file(path) == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f2"
                                 "0015ad")
    assert sha256_json({"b": 1, "a": [1, 2]}) == sha256_json({"a": (1, 2), "b": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})
    with pytest.raises(TypeError, match="cannot hash object as JSON"):
        sha256_json({"a": object()})


def test_source_digest_follows_every_edit(tmp_path):
    (tmp_path / "m.py").write_text("x = 1\n")
    before = source_digest(tmp_path)
    assert source_digest(tmp_path) == before
    (tmp_path / "m.py").write_text("x = 2\n")
    assert source_digest(tmp_path) != before
    assert source_digest(ROOT / "hw") != source_digest(ROOT / "golden")


def test_changed_names_the_inputs():
    recorded = {"config": "1", "checkpoint": "2", "old": "9"}
    expected = {"config": "1", "checkpoint": "3", "folding": "4"}
    assert changed(recorded, expected) == ["checkpoint", "folding", "old"]
    assert changed(expected, expected) == []
    assert changed(None, {"a": "1"}) == ["a"]
    assert describe_changes(["checkpoint"]) == "inputs changed: checkpoint"


def test_sections_hash_ignores_other_sections():
    base = ('[model]\nname = "t"\n[[layers]]\nkind = "dense"\nout_features = 2\n')
    a = parse_config(base)
    b = parse_config(base + "[hardware]\nfolding = 'minimal'\n")
    assert a.sections_sha256("model", "layers") == b.sections_sha256("model", "layers")
    assert a.sections_sha256("hardware") != b.sections_sha256("hardware")
    with pytest.raises(ValueError, match="unknown config section 'hw'"):
        a.sections_sha256("hw")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "out" / "x.json"
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and read_json(path) == {"a": 1}
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert read_json(path) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]
    write_bytes(path, b"not json")
    assert read_json(path) is None and read_json(tmp_path / "missing.json") is None


def test_lock_is_exclusive_across_processes(tmp_path):
    holder = ("import sys, time; from core.provenance import BuildLock\n"
              "with BuildLock(sys.argv[1], 'train'):\n"
              "    print('held', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as info:
            with BuildLock(tmp_path, "quantize"):
                pass
        assert str(info.value) == (f"{tmp_path} is in use by train (pid {proc.pid}); wait for "
                                   f"it to finish or give this quantize its own folder with "
                                   f"--out")
    finally:
        proc.kill()
        proc.wait()
    with BuildLock(tmp_path, "quantize"):
        with BuildLock(tmp_path, "quantize"):      # nested steps of one command
            pass
        assert os.path.exists(tmp_path / ".lock")


def test_atomic_write_gives_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    os.umask(old)
    path = write_bytes(tmp_path / "m.bin", b"x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~old
