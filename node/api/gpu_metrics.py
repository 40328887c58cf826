"""The GPUs' utilisation and memory for GET /metrics, through NVIDIA's management library
(`pynvml`, from the `nvidia-ml-py` package of the `nvidia` extra).

The library is loaded at the first scrape, not at import: a host without it, without a
driver, or without devices has no GPU families at all (and is not asked again).

    asi_node_gpu_utilization_ratio{gpu, name}    busy fraction over the driver's last sample
    asi_node_gpu_memory_used_bytes{gpu, name}
    asi_node_gpu_memory_total_bytes{gpu, name}
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from types import ModuleType

from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

GPU = ["gpu", "name"]


def _load_nvml() -> ModuleType:
    return importlib.import_module("pynvml")


class GpuCollector:
    """Utilisation and memory of every device NVML reports; nothing where it reports none."""

    def __init__(self, load: Callable[[], ModuleType] = _load_nvml) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._nvml: ModuleType | None = None
        self._unavailable = False

    def collect(self) -> Iterator[Metric]:
        nvml = self._started()
        if nvml is None:
            return
        try:
            devices = [
                (i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(nvml.nvmlDeviceGetCount())
            ]
            if not devices:
                return
            util = GaugeMetricFamily(
                "asi_node_gpu_utilization_ratio",
                "Fraction of the driver's last sample period a kernel ran on the GPU.",
                labels=GPU,
            )
            used = GaugeMetricFamily(
                "asi_node_gpu_memory_used_bytes", "GPU memory in use.", labels=GPU
            )
            total = GaugeMetricFamily(
                "asi_node_gpu_memory_total_bytes", "GPU memory installed.", labels=GPU
            )
            for index, handle in devices:
                labels = [str(index), _text(nvml.nvmlDeviceGetName(handle))]
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                util.add_metric(labels, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
                used.add_metric(labels, float(memory.used))
                total.add_metric(labels, float(memory.total))
        except nvml.NVMLError as exc:  # a device lost mid-scrape: no GPU figures this time
            log.warning("GPU metrics not read", extra={"error": str(exc)})
            return
        yield from (util, used, total)

    def _started(self) -> ModuleType | None:
        """The initialised library, or None where it cannot be had on this host."""
        with self._lock:
            if self._nvml is None and not self._unavailable:
                try:
                    nvml = self._load()
                except ImportError:
                    self._unavailable = True
                    return None
                try:
                    nvml.nvmlInit()
                except nvml.NVMLError as exc:  # no driver, or no NVIDIA device
                    log.info("no GPU metrics", extra={"error": str(exc)})
                    self._unavailable = True
                    return None
                self._nvml = nvml
            return self._nvml


def _text(name: str | bytes) -> str:
    """Older bindings return device names as bytes."""
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else name
