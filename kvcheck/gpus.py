"""Named GPUs for roofline predictions: peak dense bf16 throughput and memory bandwidth from the
vendors' datasheets, and the roofline time of one op."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_flops: float  # dense (no sparsity), FLOP/s
    bandwidth: float  # bytes/s
    source: str


# Vendors' datasheets (dense bf16 Tensor Core throughput, i.e. the sparsity figure halved; HBM/GDDR bandwidth).
GPUS = (
    GPU("H100 SXM", 989e12, 3.35e12, "NVIDIA H100 Tensor Core GPU datasheet: BF16 1,979 TFLOPS with sparsity; 3.35 TB/s"),
    GPU("H200", 989e12, 4.8e12, "NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 1,979 TFLOPS with sparsity; 4.8 TB/s"),
    GPU("A100 80GB", 312e12, 2.039e12, "NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): BF16 312 TFLOPS; 2,039 GB/s"),
    GPU("L40S", 362.05e12, 0.864e12, "NVIDIA L40S datasheet: BF16 733 TFLOPS with sparsity (362.05 dense); 864 GB/s"),
    GPU("L4", 121e12, 0.3e12, "NVIDIA L4 datasheet: BF16 242 TFLOPS with sparsity; 300 GB/s"),
)
LAUNCH_S = 4e-6  # per kernel launch: an assumption (typical CUDA launch latency), not a datasheet figure


def roofline_s(flops: float, nbytes: float, gpu: GPU) -> float:
    """One compute op's roofline time: max(FLOPs / peak, bytes / bandwidth)."""
    return max(flops / gpu.bf16_flops, nbytes / gpu.bandwidth)
