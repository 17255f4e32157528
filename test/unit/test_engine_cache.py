"""The TensorRT engine cache (inference/backends/engine_cache.py) with real files and stand-in build /
deserialize functions: keys, invalidation, corrupt files, force, atomic writes, logs."""
import json
import os
import stat
from dataclasses import replace

import pytest

from pixel_perfect_ros.inference.backends.engine_cache import (
    BuildProgress, EngineCache, ShapeProfile, engine_key, write_atomic)

PROFILE = ShapeProfile((1, 64, 64), (1, 768, 1024), (1, 768, 1024))


class Recorder:
    """Build/deserialize stand-ins: the 'engine' is the bytes with a magic prefix."""

    def __init__(self, payload=b"ENGINE:v1"):
        self.payload, self.builds, self.lines = payload, 0, []

    def log(self, line):
        self.lines.append(line)

    def build(self, progress):
        self.builds += 1
        progress.phase_start("Building engine", None, 3)
        for step in range(3):
            assert progress.step_complete("Building engine", step)
        progress.phase_finish("Building engine")
        return self.payload

    @staticmethod
    def deserialize(data):
        if not data.startswith(b"ENGINE:"):
            raise RuntimeError("Serialization assertion: Version tag does not match")
        return data.decode()

    def text(self):
        return "\n".join(self.lines)


@pytest.fixture
def onnx(tmp_path):
    path = tmp_path / "dit_step.onnx"
    path.write_bytes(b"onnx graph v1")
    return path


def key_for(onnx, **changes):
    fields = dict(trt_version="10.3.0", gpu_name="Orin", compute_capability=(8, 7), precision="fp16", profile=PROFILE)
    fields.update(changes)
    return engine_key(onnx, **fields)


def test_miss_builds_then_hit_loads(tmp_path, onnx):
    rec = Recorder()
    cache = EngineCache(tmp_path / "cache", rec.log)
    key = key_for(onnx)
    assert cache.load_or_build("dit_step.fp16", key, rec.build, rec.deserialize) == "ENGINE:v1"
    assert rec.builds == 1
    assert "first run" in rec.text() and "may take minutes" in rec.text()
    assert "built TensorRT engine dit_step.fp16 in" in rec.text() and " s (" in rec.text()
    engine_path, key_path = cache.paths("dit_step.fp16")
    assert engine_path.read_bytes() == b"ENGINE:v1"  # exactly the engine bytes: no header
    stored = json.loads(key_path.read_text())
    assert stored["key"]["trt_version"] == "10.3.0" and stored["key"]["compute_capability"] == "8.7"
    rec.lines.clear()
    assert cache.load_or_build("dit_step.fp16", key_for(onnx), rec.build, rec.deserialize) == "ENGINE:v1"
    assert rec.builds == 1 and "loaded TensorRT engine dit_step.fp16" in rec.text()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["dit_step.fp16.engine",
                                                                      "dit_step.fp16.engine.json"]


@pytest.mark.parametrize("change, expected", [
    (dict(trt_version="11.0.0"), "trt_version 10.3.0 -> 11.0.0"),
    (dict(gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0)), "gpu_name Orin -> NVIDIA H100"),
    (dict(compute_capability=(8, 6)), "compute_capability 8.7 -> 8.6"),
    (dict(precision="fp32"), "precision fp16 -> fp32"),
    (dict(profile=ShapeProfile((1, 64, 64), (1, 512, 512), (1, 512, 512))), "profile N,H,W"),
    (dict(profile=ShapeProfile((1, 64, 64), (1, 672, 1024), (1, 768, 1024))), "(opt 1x672x1024)"),  # opt only
])
def test_each_key_field_invalidates_with_a_reason(tmp_path, onnx, change, expected):
    rec = Recorder()
    cache = EngineCache(tmp_path, rec.log)
    old, new = key_for(onnx), key_for(onnx, **change)
    assert old.digest() != new.digest()
    cache.load_or_build("e", old, rec.build, rec.deserialize)
    rec.lines.clear()
    rec.payload = b"ENGINE:v2"
    assert cache.load_or_build("e", new, rec.build, rec.deserialize) == "ENGINE:v2"
    assert rec.builds == 2
    line = next(line for line in rec.lines if "rebuilding" in line)
    assert expected in line and "was built for TensorRT 10.3.0 / Orin (sm 8.7)" in line


def test_changed_onnx_changes_the_key_and_rebuilds(tmp_path, onnx):
    rec = Recorder()
    cache = EngineCache(tmp_path, rec.log)
    cache.load_or_build("e", key_for(onnx), rec.build, rec.deserialize)
    onnx.write_bytes(b"onnx graph v2")
    cache.load_or_build("e", key_for(onnx), rec.build, rec.deserialize)
    assert rec.builds == 2 and "ONNX graph changed" in rec.text()
    # The external-data file of a large graph is part of the hash too.
    before = key_for(onnx).onnx_sha256
    onnx.with_name(onnx.name + ".data").write_bytes(b"weights")
    assert key_for(onnx).onnx_sha256 != before


def test_key_is_stable_and_readable(onnx):
    key = key_for(onnx)
    assert key.digest() == key_for(onnx).digest()
    assert key.describe() == "TensorRT 10.3.0 / Orin (sm 8.7), fp16"
    assert key.changes_from(vars(replace(key, precision="bf16"))) == ["precision bf16 -> fp16"]


@pytest.mark.parametrize("corrupt", ["raises", "returns_none"])
def test_undeserializable_engine_is_rebuilt_with_a_warning(tmp_path, onnx, corrupt):
    rec, warnings = Recorder(), []
    cache = EngineCache(tmp_path, rec.log, warn=warnings.append)
    key = key_for(onnx)
    cache.load_or_build("e", key, rec.build, rec.deserialize)
    engine_path, _ = cache.paths("e")
    if corrupt == "raises":  # e.g. an engine from another TensorRT whose key file was copied along
        engine_path.write_bytes(b"XXXXXX:v1")
        deserialize = rec.deserialize
    else:
        calls = []

        def deserialize(data):  # the TensorRT runtime returns None for a bad plan
            calls.append(data)
            return None if len(calls) == 1 else rec.deserialize(data)
    assert cache.load_or_build("e", key, rec.build, deserialize) == "ENGINE:v1"
    assert rec.builds == 2
    assert len(warnings) == 1 and "could not be deserialized" in warnings[0] and "rebuilding" in warnings[0]
    if corrupt == "raises":
        assert "Version tag does not match" in warnings[0]
    assert engine_path.read_bytes() == b"ENGINE:v1"


def test_missing_or_broken_key_file_and_truncated_engine_rebuild(tmp_path, onnx):
    rec = Recorder()
    cache = EngineCache(tmp_path, rec.log)
    key = key_for(onnx)
    cache.load_or_build("e", key, rec.build, rec.deserialize)
    engine_path, key_path = cache.paths("e")
    key_path.write_text("{not json")
    cache.load_or_build("e", key, rec.build, rec.deserialize)
    assert rec.builds == 2 and "missing or unreadable" in rec.text()
    engine_path.write_bytes(b"ENGINE")  # a partial copy
    cache.load_or_build("e", key, rec.build, rec.deserialize)
    assert rec.builds == 3 and "incomplete copy" in rec.text()


def test_force_rebuilds(tmp_path, onnx):
    rec = Recorder()
    cache = EngineCache(tmp_path, rec.log)
    key = key_for(onnx)
    cache.load_or_build("e", key, rec.build, rec.deserialize)
    cache.load_or_build("e", key, rec.build, rec.deserialize, force=True)
    assert rec.builds == 2 and "force_engine_update" in rec.text()


def test_failed_build_keeps_the_old_engine_and_leaves_no_partial_file(tmp_path, onnx):
    rec = Recorder()
    cache = EngineCache(tmp_path, rec.log)
    cache.load_or_build("e", key_for(onnx), rec.build, rec.deserialize)

    def failing(progress):
        raise MemoryError("out of memory while building")

    with pytest.raises(MemoryError):
        cache.load_or_build("e", key_for(onnx, precision="fp32"), failing, rec.deserialize)
    engine_path, key_path = cache.paths("e")
    assert engine_path.read_bytes() == b"ENGINE:v1"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".onnx") == ["e.engine", "e.engine.json"]
    # The old entry is still usable by its own key.
    assert cache.load_or_build("e", key_for(onnx), rec.build, rec.deserialize) == "ENGINE:v1"
    assert rec.builds == 1


def test_a_new_engine_that_does_not_deserialize_is_an_error(tmp_path, onnx):
    rec = Recorder(payload=b"garbage")
    with pytest.raises(RuntimeError, match="just built does not deserialize"):
        EngineCache(tmp_path, rec.log).load_or_build("e", key_for(onnx), rec.build, rec.deserialize)


def test_cache_files_and_folder_are_readable_by_other_users(tmp_path, onnx):
    rec = Recorder()
    cache = EngineCache(tmp_path / "shared" / "engines", rec.log)
    umask = os.umask(0o077)  # a private umask: the cache is made readable all the same
    try:
        cache.load_or_build("dit_step.fp16", key_for(onnx), rec.build, rec.deserialize)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(cache.folder.stat().st_mode) == 0o755
    for path in cache.paths("dit_step.fp16"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name


def test_write_atomic_cleans_up_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.engine"
    write_atomic(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.engine"]


def test_profile_validation_and_contains():
    assert PROFILE.contains(1, 480, 640) and not PROFILE.contains(1, 1024, 768) and not PROFILE.contains(2, 64, 64)
    assert str(PROFILE) == "N,H,W 1x64x64 .. 1x768x1024 (opt 1x768x1024)"
    with pytest.raises(ValueError, match="multiples of 16"):
        ShapeProfile((1, 64, 64), (1, 500, 512), (1, 768, 1024))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile((1, 64, 64), (1, 1024, 1024), (1, 768, 1024))


def test_build_progress_throttles():
    lines, now = [], [0.0]
    progress = BuildProgress("dit_step", lines.append, every_s=10, clock=lambda: now[0])
    progress.phase_start("Building engine", None, 100)
    progress.phase_start("Tactic timing", "Building engine", 5)  # nested phases are not announced
    for step in range(100):
        now[0] += 1
        assert progress.step_complete("Building engine", step)
    assert lines[0] == "  dit_step: Building engine (100 steps)"
    assert len(lines) == 11 and lines[1] == "  dit_step: Building engine 10/100"
