"""Cache of built TensorRT engines (Isaac ROS conventions: ``engine_file_path``, ``force_engine_update``).

Plain Python (no TensorRT import): the build and deserialize steps are callables handed in.

An entry is two files in the cache folder::

    <name>.engine        the serialized engine, exactly as TensorRT wrote it (no header: trtexec reads it)
    <name>.engine.json   its key (ONNX sha256, TensorRT version, GPU, compute capability, precision,
                         shape profile: min, opt and max) in readable JSON, written after the engine

A stored engine is used only when its key equals the current one. Otherwise (a new ONNX, another
TensorRT version or GPU, another precision or shape range), or when the file cannot be deserialized
("Version tag does not match"), or when ``force`` is set, it is rebuilt, with a log line saying why;
never a crash. Writes are atomic (temporary file, fsync, ``os.replace``): a failed or interrupted build
leaves the previous entry as it was and no partial file. Files are 0644 and a folder created here 0755
whatever the umask (``commit_file``, ``make_cache_folder``; also for ``onnx_export``'s graphs): a node run
as another user reads the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
Log = Callable[[str], None]
FILE_MODE, FOLDER_MODE = 0o644, 0o755
"""Modes of cache files and of the cache folder: readable by other users' processes."""


@dataclass(frozen=True)
class ShapeProfile:
    """Range of input sizes an engine accepts: (N, H, W) at min / opt / max; H, W in px, multiples of 16.

    TensorRT tunes its kernels for ``opt`` and accepts any size between ``min`` and ``max``.

    Raises (from the constructor): ValueError for sizes that are not multiples of 16 or not ordered.
    """

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    def __post_init__(self):
        for label, shape in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if len(shape) != 3 or any(not isinstance(v, int) or v < 1 for v in shape):
                raise ValueError(f"profile {label} must be 3 positive ints (N, H, W), got {shape!r}")
            if shape[1] % 16 or shape[2] % 16:
                raise ValueError(f"profile {label} height and width must be multiples of 16, got {shape!r}")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"profile must satisfy min <= opt <= max per dimension, got {self}")

    def contains(self, n: int, height: int, width: int) -> bool:
        """Whether an (n, height, width) input lies inside the range."""
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (n, height, width), self.max))

    def __str__(self) -> str:
        def fmt(shape):
            return "x".join(str(v) for v in shape)

        return f"N,H,W {fmt(self.min)} .. {fmt(self.max)} (opt {fmt(self.opt)})"


@dataclass(frozen=True)
class EngineKey:
    """What an engine depends on; two engines with equal keys are interchangeable.

    Attributes:
        onnx_sha256: sha256 of the ONNX file (and its external-data file, if any).
        trt_version: ``tensorrt.__version__``, e.g. "10.3.0".
        gpu_name: ``torch.cuda.get_device_name``, e.g. "Orin".
        compute_capability: "major.minor", e.g. "8.7".
        precision: "fp32" | "fp16" | "bf16".
        profile: ``str(ShapeProfile)``: min, max and opt (the size the kernels are tuned for).
    """

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: str

    def digest(self) -> str:
        """sha256 of the fields in sorted JSON: the same in every process."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def describe(self) -> str:
        """Short text for logs: 'TensorRT 10.3.0 / Orin (sm 8.7), fp16'."""
        return f"TensorRT {self.trt_version} / {self.gpu_name} (sm {self.compute_capability}), {self.precision}"

    def changes_from(self, old: dict) -> list[str]:
        """Readable differences from an older key's fields ('trt_version 10.3.0 -> 11.0.0', ...)."""
        changes = []
        for field in fields(self):
            before, now = old.get(field.name), getattr(self, field.name)
            if before != now:
                if field.name == "onnx_sha256":
                    changes.append("ONNX graph changed")
                else:
                    changes.append(f"{field.name} {before} -> {now}")
        return changes


def file_sha256(paths: Iterable[str | Path], chunk_bytes: int = 1 << 24) -> str:
    """sha256 over the bytes of ``paths`` in order (each file's name is not part of the hash)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            while chunk := stream.read(chunk_bytes):
                digest.update(chunk)
    return digest.hexdigest()


def onnx_files(onnx_path: str | Path) -> list[Path]:
    """The ONNX file plus its external-data file ``<file>.data`` (torch's exporter convention) if present."""
    onnx_path = Path(onnx_path)
    data = onnx_path.with_name(onnx_path.name + ".data")
    return [onnx_path, data] if data.exists() else [onnx_path]


def engine_key(onnx_path: str | Path, trt_version: str, gpu_name: str, compute_capability: tuple[int, int] | str,
               precision: str, profile: ShapeProfile) -> EngineKey:
    """The key of an engine built from ``onnx_path`` (hashes the ONNX bytes now)."""
    if not isinstance(compute_capability, str):
        compute_capability = ".".join(str(v) for v in compute_capability)
    return EngineKey(file_sha256(onnx_files(onnx_path)), str(trt_version), str(gpu_name), compute_capability,
                     precision, str(profile))


def make_cache_folder(folder: str | Path) -> Path:
    """``folder``, created with its parents if missing (the folder itself ``FOLDER_MODE`` whatever the umask)."""
    folder = Path(folder)
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, FOLDER_MODE)
    return folder


def commit_file(temp: str | Path, path: str | Path) -> None:
    """Give the finished temporary file ``temp`` ``FILE_MODE`` (mkstemp makes it 0600) and rename it to ``path``."""
    os.chmod(temp, FILE_MODE)
    os.replace(temp, path)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (``FILE_MODE``) so that readers see the old file or the whole new one, never
    a part."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        commit_file(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    try:  # make the rename durable too (best effort: not every filesystem allows fsync on a folder)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:
        pass


class BuildProgress:
    """Turns a builder's phase/step events into occasional log lines (at most one per ``every_s``).

    The TensorRT backend's ``IProgressMonitor`` forwards its calls here.
    """

    def __init__(self, name: str, log: Log, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.name, self.log, self.every_s, self.clock = name, log, every_s, clock
        self.steps: dict[str, int] = {}
        self.last = clock()

    def phase_start(self, phase: str, parent: str | None, num_steps: int) -> None:
        self.steps[phase] = num_steps
        if parent is None:
            self.log(f"  {self.name}: {phase} ({num_steps} steps)")

    def step_complete(self, phase: str, step: int) -> bool:
        """Returns True (go on): the build is never cancelled from here."""
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self.log(f"  {self.name}: {phase} {step + 1}/{self.steps.get(phase, '?')}")
        return True

    def phase_finish(self, phase: str) -> None:
        self.steps.pop(phase, None)


class EngineCache:
    """Engines in ``folder`` (created if missing), keyed by ``EngineKey`` (see the module docstring).

    Args:
        folder: the cache folder (``BackendOptions.engine_file_path``).
        log: receives one line per event (loads, rebuild reasons, build progress and duration).
        warn: receives the warnings (unusable files); default ``log``.
    """

    def __init__(self, folder: str | Path, log: Log = print, warn: Log | None = None):
        self.folder = Path(folder).expanduser()
        self.log = log
        self.warn = warn or log

    def paths(self, name: str) -> tuple[Path, Path]:
        """(engine file, key file) of entry ``name``."""
        engine = self.folder / f"{name}.engine"
        return engine, engine.with_name(engine.name + ".json")

    def load_or_build(self, name: str, key: EngineKey, build: Callable[[BuildProgress], bytes],
                      deserialize: Callable[[bytes], T | None], force: bool = False) -> T:
        """The deserialized engine ``name``: the stored one when its key matches, else a new build.

        Args:
            name: entry name (file stem), e.g. "dit_step.fp16".
            key: the current key.
            build: makes the serialized engine; gets a ``BuildProgress`` to report to.
            deserialize: bytes -> engine object (None or an exception: the bytes are unusable).
            force: rebuild even when the stored entry matches (``force_engine_update``).

        Raises:
            whatever ``build`` raises (the stored entry is then left as it was), and RuntimeError
            when a freshly built engine does not deserialize.
        """
        engine_path, key_path = self.paths(name)
        if force:
            self.log(f"force_engine_update: rebuilding TensorRT engine {name}")
        elif not engine_path.exists():
            self.log(f"no TensorRT engine {name} in {self.folder}: building it (first run)")
        else:
            reason = self._stale_reason(name, key, engine_path, key_path)
            if reason is None:
                engine, error = self._deserialize(deserialize, engine_path.read_bytes())
                if engine is not None:
                    self.log(f"loaded TensorRT engine {name} ({key.describe()}) from {engine_path}")
                    return engine
                reason = f"it could not be deserialized ({error})"
                self.warn(f"WARNING: TensorRT engine {engine_path}: {reason}; rebuilding")
            else:
                self.log(f"TensorRT engine {name}: {reason}; rebuilding")
        data = self._build(name, key, build)
        make_cache_folder(self.folder)
        key_path.unlink(missing_ok=True)  # engine and key never disagree: no key file until both are written
        write_atomic(engine_path, data)
        write_atomic(key_path, json.dumps(
            {"key": asdict(key), "key_sha256": key.digest(), "engine_bytes": len(data),
             "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2).encode())
        engine, error = self._deserialize(deserialize, data)
        if engine is None:
            raise RuntimeError(f"the TensorRT engine {name} just built does not deserialize ({error})")
        return engine

    def _stale_reason(self, name: str, key: EngineKey, engine_path: Path, key_path: Path) -> str | None:
        """Why the stored entry cannot be used, or None when it matches ``key``."""
        try:
            stored = json.loads(key_path.read_text())
            old_key, old_digest, size = stored["key"], stored["key_sha256"], stored["engine_bytes"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"its key file {key_path.name} is missing or unreadable"
        if old_digest != key.digest():
            changes = key.changes_from(old_key if isinstance(old_key, dict) else {})
            old = ("TensorRT {trt_version} / {gpu_name} (sm {compute_capability}), {precision}"
                   .format_map({f.name: old_key.get(f.name, "?") for f in fields(key)})
                   if isinstance(old_key, dict) else "an unknown configuration")
            return f"was built for {old}, now {key.describe()} ({'; '.join(changes) or 'key changed'})"
        if engine_path.stat().st_size != size:
            return f"the file has {engine_path.stat().st_size} bytes, its key file says {size} (incomplete copy?)"
        return None

    @staticmethod
    def _deserialize(deserialize: Callable[[bytes], T | None], data: bytes) -> tuple[T | None, str]:
        try:
            engine = deserialize(data)
        except Exception as error:  # noqa: BLE001 - any failure means: rebuild
            return None, f"{type(error).__name__}: {error}"
        return engine, "" if engine is not None else "the runtime returned no engine"

    def _build(self, name: str, key: EngineKey, build: Callable[[BuildProgress], bytes]) -> bytes:
        self.log(f"building TensorRT engine {name} for {key.describe()}, {key.profile} (may take minutes)...")
        start = time.monotonic()
        data = build(BuildProgress(name, self.log))
        if not data:
            raise RuntimeError(f"building the TensorRT engine {name} gave no engine")
        self.log(f"built TensorRT engine {name} in {time.monotonic() - start:.0f} s "
                 f"({len(data) / 2**20:.1f} MiB) -> {self.paths(name)[0]}")
        return bytes(data)
