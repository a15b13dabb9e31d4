"""Device leases: which of this machine's devices a deployment may use while it runs.

One lock file per device id in a machine-wide directory, so xdist workers (and separate pytest sessions
on one machine) never put two deployments on one GPU, or on one core on `cpu`. The locks are `flock`s
(filelock's UnixFileLock): the kernel drops them when the holding process dies, so a killed worker
never strands a device. A lease takes all of its devices or none (no partial holds, so two workers
waiting for two devices each cannot deadlock each other).

Devices are where a measurement runs, not what is measured: leased ids reach the roles' environment
(CUDA_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES, or the core binding on cpu) after the measurement key is
taken, so the same deployment on GPU 3 reuses a measurement taken on GPU 0.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

# Variables that restrict a process to some devices, per vendor, first set one wins as the pool.
VISIBLE = {"nvidia": ("CUDA_VISIBLE_DEVICES",), "amd": ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                                                            "CUDA_VISIBLE_DEVICES")}
# What the roles get: the variable the engine reads for its device list.
ROLE_VARIABLE = {"nvidia": "CUDA_VISIBLE_DEVICES", "amd": "HIP_VISIBLE_DEVICES"}


class LeaseError(ValueError):
    """A device list that cannot be used (one line, for a usage error)."""


def parse_devices(text: str, where: str) -> tuple[str, ...]:
    """"0,1,3" -> ("0", "1", "3"); ranges "0-3" are expanded; duplicates refused."""
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep and lo.isdigit() and hi.isdigit():
            if int(hi) < int(lo):
                raise LeaseError(f"{where} {text!r}: range {part!r} runs backwards")
            out += [str(i) for i in range(int(lo), int(hi) + 1)]
        elif part[0].isalnum() and part.replace("-", "").replace("_", "").isalnum():
            out.append(part)  # GPU UUIDs (GPU-6f3e...) are ids too
        else:
            raise LeaseError(f"{where} {text!r}: {part!r} is not a device id")
    if len(set(out)) != len(out):
        raise LeaseError(f"{where} {text!r}: device {next(d for d in out if out.count(d) > 1)} listed twice")
    if not out:
        raise LeaseError(f"{where} {text!r}: no devices")
    return tuple(out)


def _cores() -> tuple[str, ...]:
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return tuple(str(c) for c in usable)


def device_pool(vendor: str, option: str | None, detected: int) -> tuple[tuple[str, ...], str]:
    """(device ids, where they came from): --infer-devices, else the vendor's *_VISIBLE_DEVICES, else
    0..detected-1; on cpu the cores this process may run on."""
    if option is not None:
        devices = parse_devices(option, "--infer-devices")
        if vendor == "cpu":  # the cores exist or not, here and now
            cores = set(_cores())
            missing = [d for d in devices if d not in cores]
            if missing:
                raise LeaseError(f"--infer-devices {option!r}: device {missing[0]} does not exist here "
                                 f"(cores this process may use: {', '.join(sorted(cores, key=int))})")
        return devices, "--infer-devices"
    for var in VISIBLE.get(vendor, ()):
        if os.environ.get(var, "").strip():
            return parse_devices(os.environ[var], var), var
    if vendor == "cpu":
        return _cores(), "the cores this process may use"
    return tuple(str(i) for i in range(detected)), "devices detected"


def default_lock_dir() -> Path:
    """Machine-wide: leases hold across pytest sessions of one user."""
    return Path(tempfile.gettempdir()) / f"pytest-infer-leases-{os.getuid() if hasattr(os, 'getuid') else 0}"


@dataclass(frozen=True)
class DevicePool:
    devices: tuple[str, ...]
    lock_dir: Path
    vendor: str = "cpu"
    poll_s: float = 0.2

    def _lock(self, device: str) -> FileLock:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        # is_singleton off: each lease holds its own OS lock, and releases exactly what it took.
        return FileLock(str(self.lock_dir / f"{self.vendor}-{device}.lock"), is_singleton=False)

    def try_take(self, k: int) -> list[tuple[str, FileLock]] | None:
        """k free devices, locked, in pool order; None (nothing held) when fewer are free."""
        held: list[tuple[str, FileLock]] = []
        for device in self.devices:
            lock = self._lock(device)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            held.append((device, lock))
            if len(held) == k:
                return held
        for _, lock in held:
            lock.release()
        return None

    @contextmanager
    def lease(self, k: int, timeout: float | None = None, waiting: str = "") -> Iterator[tuple[str, ...]]:
        """Hold k devices for the block; waits for them (forever by default: a busy pool is not an error,
        but a request larger than the pool is)."""
        if k > len(self.devices):
            raise LeaseError(f"needs {k} device(s), the pool has {len(self.devices)}: {','.join(self.devices)}")
        deadline = None if timeout is None else time.monotonic() + timeout
        held = self.try_take(k)
        while held is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no {k} free device(s) of {','.join(self.devices)} in {timeout:.0f} s {waiting}")
            time.sleep(self.poll_s)
            held = self.try_take(k)
        try:
            yield tuple(d for d, _ in held)
        finally:
            for _, lock in held:
                lock.release()
