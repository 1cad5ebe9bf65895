"""CPU, RAM and NVIDIA GPU readings of this machine, as plain msgpack-able dicts.

Used by the TUI's system panel (PC1) and by the daemon's ``stats`` op (PC2).
NVML is optional: without a driver or without nvidia-ml-py, ``gpus`` is empty and
``gpu_error`` says why, and everything else still reports.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    util_percent: float
    mem_used_mb: float
    mem_total_mb: float
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True)
class SystemReading:
    cpu_percent: float
    ram_used_mb: float
    ram_total_mb: float
    rss_mb: float
    gpus: list[GpuReading] = field(default_factory=list)
    gpu_error: str | None = None
    # Which build each part of this machine runs: {"llama.cpp": "CPU", ...}.
    builds: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Nvml:
    """Lazily initialised NVML; remembers why it is unavailable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: bool | None = None
        self.error: str | None = None
        self._nvml: Any = None

    def _init(self) -> bool:
        if self._ready is not None:
            return self._ready
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._ready = True
        except ImportError:
            self.error = "no NVIDIA GPU (nvidia-ml-py is not installed)"
            self._ready = False
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.error = f"no NVIDIA GPU ({exc})"
            self._ready = False
        return self._ready

    def read(self) -> list[GpuReading]:
        with self._lock:
            if not self._init():
                return []
            nv = self._nvml
            gpus = []
            try:
                for i in range(nv.nvmlDeviceGetCount()):
                    h = nv.nvmlDeviceGetHandleByIndex(i)
                    name = nv.nvmlDeviceGetName(h)
                    util = nv.nvmlDeviceGetUtilizationRates(h)
                    mem = nv.nvmlDeviceGetMemoryInfo(h)
                    gpus.append(
                        GpuReading(
                            index=i,
                            name=name.decode() if isinstance(name, bytes) else str(name),
                            util_percent=float(util.gpu),
                            mem_used_mb=mem.used / 2**20,
                            mem_total_mb=mem.total / 2**20,
                            temperature_c=_optional(
                                lambda h=h: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
                            ),
                            power_w=_optional(lambda h=h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
                        )
                    )
            except Exception as exc:
                self.error = f"NVML read failed ({exc})"
                return []
            if not gpus:
                self.error = "no NVIDIA GPU (NVML found none)"
            return gpus


def _optional(read: Any) -> float | None:
    # Some boards (and MIG slices) do not report temperature or power.
    try:
        return float(read())
    except Exception:
        return None


_nvml = _Nvml()
_process = psutil.Process(os.getpid())
_builds: dict[str, str] = {}


def set_build(part: str, description: str) -> None:
    """Record which build a part of this process uses; every later reading carries it."""
    _builds[part] = description


def snapshot() -> SystemReading:
    """One reading. The first CPU percentage after start is 0.0 (psutil needs an interval)."""
    vm = psutil.virtual_memory()
    gpus = _nvml.read()
    return SystemReading(
        cpu_percent=psutil.cpu_percent(interval=None),
        ram_used_mb=(vm.total - vm.available) / 2**20,
        ram_total_mb=vm.total / 2**20,
        rss_mb=_process.memory_info().rss / 2**20,
        gpus=gpus,
        gpu_error=None if gpus else _nvml.error,
        builds=dict(_builds),
    )


def gpu_readings() -> list[GpuReading]:
    """The GPUs alone: no CPU sample, which would shorten the panel's next interval."""
    return _nvml.read()


def reading_from_dict(data: dict[str, Any]) -> SystemReading:
    """Rebuild a reading received from the node's ``stats``."""
    gpus = [GpuReading(**g) for g in data.get("gpus", [])]
    return SystemReading(
        cpu_percent=float(data["cpu_percent"]),
        ram_used_mb=float(data["ram_used_mb"]),
        ram_total_mb=float(data["ram_total_mb"]),
        rss_mb=float(data["rss_mb"]),
        gpus=gpus,
        gpu_error=data.get("gpu_error"),
        builds={str(k): str(v) for k, v in (data.get("builds") or {}).items()},
    )
