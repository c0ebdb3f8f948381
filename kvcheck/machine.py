"""The machine key that perf baselines are stored under: device, CUDA, torch, dtype (and, on CPU,
architecture and core count — close enough that ratios carry between like machines)."""
from __future__ import annotations

import os
import platform
import re

import torch


def machine_key(device: torch.device, dtype_name: str) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        cuda = torch.version.cuda or "none"
        parts = ["cuda", name, f"cuda{cuda}", f"torch{torch.__version__.split('+')[0]}", dtype_name]
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        parts = ["cpu", platform.machine(), f"{cores}cores", f"torch{torch.__version__.split('+')[0]}", dtype_name]
    return re.sub(r"[^A-Za-z0-9.+=-]+", "_", "-".join(parts))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def software_key(device: torch.device, dtype_name: str) -> str:
    """The software path counted work is stored under: what decides which ops run and on what shapes
    (device type, dtype, the attention kernel, torch and transformers minor versions), not the
    hardware. Counts on one path are the same on any machine."""
    import transformers

    from .attention import _flash

    attn = "flash" if device.type == "cuda" and dtype_name in ("float16", "bfloat16") and _flash() else "sdpa"
    minor = lambda v: ".".join(v.split("+")[0].split(".")[:2])  # noqa: E731
    parts = [device.type, dtype_name, attn, f"torch{minor(torch.__version__)}",
             f"transformers{minor(transformers.__version__)}"]
    return re.sub(r"[^A-Za-z0-9.+=-]+", "_", "-".join(parts))
