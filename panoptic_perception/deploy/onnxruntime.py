"""Running an exported network part with ONNX Runtime.

:class:`OnnxRuntimeNetwork` takes the prepared batch as a torch tensor and returns the outputs of
:meth:`Backend.forward <panoptic_perception.backends.base.Backend.forward>` as torch tensors, nested as
``forward`` nests them, on the backend's device. Execution providers: CPU; on a CUDA device, the CUDA
provider first where this onnxruntime build has it (``onnxruntime-gpu``), with the CPU provider as the
fallback for operators it lacks. Where a CUDA device was asked for but the session has no CUDA provider, a
warning names the providers it runs with; ``providers`` (in the backend's ``describe()``) are the session's.

Threads: ``intra_op_num_threads`` is torch's thread count when the session is made (the ``threads``
parameter of the node and ``--threads`` of the command line set it first); a made session keeps it, so a
change of the node's ``threads`` reaches ONNX Runtime at the next configure or backend reload. With ``OMP_WAIT_POLICY=PASSIVE``
in the environment, ONNX Runtime's worker threads do not spin either (see the README's note on shared CPUs).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .onnx_export import INPUT_NAME, check_batch, unflatten_outputs

log = logging.getLogger("panoptic_perception.deploy")


def providers_for(device: torch.device) -> list[str]:
    """ONNX Runtime's execution providers for a torch device, best first."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


class OnnxRuntimeNetwork:
    """An ONNX file from :func:`~panoptic_perception.deploy.onnx_export.export_onnx` in an
    ``onnxruntime.InferenceSession``.

    ``__call__(batch)``: (N, 3, H, W) float32 tensor (any memory format) → ``forward``'s outputs as float32
    tensors on ``device``. Raises ValueError for N other than the batch of a file exported without a
    dynamic batch (:func:`~panoptic_perception.deploy.onnx_export.check_batch`).
    """

    def __init__(self, path: str | Path, device: torch.device, structure: str) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no warnings about the providers' node placement
        self.path = str(path)
        self.device = device
        providers = providers_for(device)
        index = None if device.index is None else str(device.index)
        provider_options = [{"device_id": index} if p == "CUDAExecutionProvider" and index else {} for p in providers]
        self.session = onnxruntime.InferenceSession(self.path, options, providers=providers,
                                                    provider_options=provider_options)
        self.providers = self.session.get_providers()  # what it runs with, not what was asked for
        if device.type == "cuda" and "CUDAExecutionProvider" not in self.providers:
            log.warning("device %s: this onnxruntime (%s) has no usable CUDA execution provider; the network runs "
                        "with %s on the CPU (pip install onnxruntime-gpu for CUDA)", device,
                        onnxruntime.__version__, ", ".join(self.providers))
        self.structure = json.loads(structure)
        batch = self.session.get_inputs()[0].shape[0]  # a name such as "batch" where dynamic
        self.fixed_batch = batch if isinstance(batch, int) else None

    def __call__(self, batch: torch.Tensor):
        check_batch(self.path, self.fixed_batch, batch.shape[0])
        images = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        outputs = self.session.run(None, {INPUT_NAME: images})
        return unflatten_outputs([torch.from_numpy(o).to(self.device) for o in outputs], self.structure)
