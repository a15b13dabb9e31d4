"""Which accelerators this machine has: checked before launching, so a run on the wrong machine fails
in a second with a reason instead of after an engine's start-up timeout."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from functools import cache

# Per vendor: tools that list devices (first found wins), and the marker of one device in their output.
_LISTERS = {"nvidia": [(["nvidia-smi", "-L"], "GPU ")],
            "amd": [(["amd-smi", "list"], "GPU:"), (["rocm-smi", "--showid"], "GPU[")]}


@cache
def visible_devices(vendor: str) -> tuple[int, str]:
    """(count, how it was found). The cpu kind always has its cores."""
    if vendor == "cpu":
        return os.cpu_count() or 1, "os.cpu_count()"
    for argv, marker in _LISTERS[vendor]:
        if shutil.which(argv[0]) is None:
            continue
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 0, f"{' '.join(argv)} failed: {exc}"
        # rocm-smi repeats a device on several lines: count distinct ids
        ids = {line.strip().split()[0] for line in out.splitlines() if line.strip().startswith(marker)}
        return len(ids), " ".join(argv)
    return 0, " / ".join(argv[0] for argv, _ in _LISTERS[vendor]) + " not found"


def preflight(gpu: str, vendor: str, needed_per_node: int) -> str | None:
    """Why this machine cannot run a role needing `needed_per_node` devices of `gpu`, or None."""
    count, how = visible_devices(vendor)
    if count >= needed_per_node:
        return None
    return (f"needs {needed_per_node} {gpu} device(s) on this node, found {count} ({how}); "
            f"use --infer-plan to print the commands, or --results DIR to replay stored results")


@cache
def device_fingerprint(vendor: str) -> str:
    """What the devices are, for a baseline's environment: GPU name and driver, or the CPU model and
    how many cores this process may use. Best effort: "unknown" when the vendor tool is missing."""
    if vendor == "cpu":
        model = "unknown CPU"
        try:
            with open("/proc/cpuinfo") as fh:
                model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
        except OSError:
            model = platform.processor() or model
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return f"cpu: {model} x{cores}"
    queries = {"nvidia": ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
               "amd": ["amd-smi", "static", "--asic", "--driver", "--csv"]}
    argv = queries[vendor]
    if shutil.which(argv[0]) is None:
        return f"{vendor}: unknown ({argv[0]} not found)"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return f"{vendor}: unknown ({argv[0]} failed)"
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()][1 if vendor == "amd" else 0:]  # amd: CSV header
    return f"{vendor}: {lines[0] if lines else 'unknown'}"  # the first device stands for the node
