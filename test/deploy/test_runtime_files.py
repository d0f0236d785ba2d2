"""The files behind the runtimes: what the cache key covers."""

from __future__ import annotations

import inspect
from pathlib import Path

from panoptic_perception.backends.base import Backend
from panoptic_perception.backends.twinlitenet import TwinLiteNetBackend
from panoptic_perception.deploy.onnx_export import code_files


def test_the_cache_key_covers_the_default_forward_in_backends_base():
    files = code_files(inspect.getfile(TwinLiteNetBackend))
    assert Path(inspect.getfile(TwinLiteNetBackend)) in files
    assert Path(inspect.getfile(Backend)).resolve() in [f.resolve() for f in files], "Backend.forward is exported"
    assert "forward" not in vars(TwinLiteNetBackend), "TwinLiteNet exports the inherited forward"

