"""One experiment per GPU: a pool of device indices that experiment threads lease.

The scheduler runs up to `workers` experiments at once; on a multi-GPU machine each one
leases a GPU index here and its sandbox sees only that GPU (CUDA_VISIBLE_DEVICES), so
inside the sandbox it is always "cuda:0" and two experiments never share a device. A
lease blocks while every GPU is busy, so more workers than GPUs queue instead of doubling
up. An empty pool means CPU training.
"""

from __future__ import annotations

import threading
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager


class DevicePool:
    """Thread-safe leases on a fixed set of CUDA device indices."""

    def __init__(self, devices: Sequence[int]) -> None:
        if len(set(devices)) != len(devices) or any(d < 0 for d in devices):
            raise ValueError(f"GPU indices must be distinct and non-negative, got {devices}")
        self.devices = tuple(devices)
        self._free = list(devices)
        self._cond = threading.Condition()

    def __bool__(self) -> bool:
        return bool(self.devices)

    @contextmanager
    def lease(self, timeout_s: float | None = None, prefer: Container[int] = ()) -> Iterator[int]:
        """Hold one free GPU index for the duration of the block; waits while all are busy.
        A free index in `prefer` is taken first (one where a sandbox already waits)."""
        if not self.devices:
            raise ValueError("the pool has no GPUs; train on the CPU instead")
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._free), timeout=timeout_s):
                raise TimeoutError(f"no GPU of {self.devices} became free in {timeout_s} s")
            index = next((i for i in self._free if i in prefer), self._free[0])
            self._free.remove(index)
        try:
            yield index
        finally:
            with self._cond:
                self._free.append(index)
                self._cond.notify()


def visible_gpus() -> int:
    """How many CUDA devices torch sees here (0 without CUDA). torch counts them through
    NVML where it can, without creating a CUDA context in this process."""
    import torch

    return int(torch.cuda.device_count())


def sandbox_gpu_env(index: int) -> dict[str, str]:
    """The environment that shows a sandbox only GPU `index` (as its cuda:0)."""
    return {"CUDA_VISIBLE_DEVICES": str(index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
