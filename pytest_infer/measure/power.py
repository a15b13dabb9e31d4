"""Device power around one level: mean watts and joules, summed over the deployment's devices.

`with PowerSampler(vendor, devices) as power: <the level's load>`, then `power.reading(last_s)`. A thread polls
every ~0.5 s; the joules are the integral over the window (trapezoids of the watts a tool reports, or the
difference of an energy counter), and `last_s` keeps the window's last seconds: the benchmark's own measured
phase, after its warm-ups. Sources, by the GPU kind's vendor:

- nvidia: `nvidia-smi --query-gpu=index,power.draw --format=csv,noheader,nounits -i <ids>`. power.draw is "the
  last measured power draw for the entire board, in watts. On Ampere or newer devices, returns average power
  draw over 1 sec" (`nvidia-smi --help-query-gpu`, driver 590); a value it cannot give reads "[N/A]" (or
  another bracketed word: "[Not Supported]", "[Unknown Error]").
- amd: `amd-smi metric --power --json -g <ids>`, a JSON list of one object per GPU (see parse_amd_smi).
- cpu: RAPL package energy counters, /sys/class/powercap/intel-rapl:<n>/energy_uj (Intel, and AMD on recent
  kernels), wrapping at max_energy_range_uj. They count the whole socket: engine, client and the rest.

Device ids are the ones the deployment leased (its roles' CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES). They
name the same GPUs as the tool's own index when the CUDA/HIP enumeration follows the PCI order (identical GPUs
on a node; CUDA_DEVICE_ORDER=PCI_BUS_ID in general).

A tool missing, failing or printing what cannot be parsed gives no numbers and a one-line reason: power never
fails a level and a number is never guessed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Self

RAPL_ROOT = Path("/sys/class/powercap")
INTERVAL_S = 0.5
CALL_TIMEOUT_S = 5.0
MAX_GAP_S = 5.0  # a longer stretch without a good sample: no numbers (a gap is not interpolated over)
_PACKAGE = re.compile(r"intel-rapl:\d+")  # package domains; intel-rapl:0:0 (core, dram...) lie inside them


class PowerError(Exception):
    """Why no power was read: one line."""


@dataclass(frozen=True)
class Reading:
    """Mean watts and joules over a window, summed over the devices; None (both) with the reason in `note`."""

    power_w: float | None
    energy_j: float | None
    seconds: float
    note: str  # how the power was read, or why there are no numbers


# ---- parsing the tools' output ---------------------------------------------------------------------------
def parse_nvidia_smi(text: str, devices: Sequence[str] = ()) -> float:
    """Watts summed over the GPUs of `nvidia-smi --query-gpu=index,power.draw --format=csv,noheader,nounits`
    ("0, 631.95" a line). Numeric `devices` must each appear once; a GPU without a reading raises."""
    total, seen = 0.0, []
    for line in (ln.strip() for ln in text.splitlines()):
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            raise PowerError(f"nvidia-smi printed {line[:80]!r}, not 'index, power.draw'")
        index, value = parts
        if value.startswith("["):  # [N/A], [Not Supported], [Unknown Error]...
            raise PowerError(f"nvidia-smi reports power.draw {value} for GPU {index}")
        try:
            watts = float(value.removesuffix("W").strip())
        except ValueError:
            raise PowerError(f"nvidia-smi printed power.draw {value[:40]!r} for GPU {index}") from None
        seen.append(index)
        total += watts
    if not seen:
        raise PowerError("nvidia-smi printed no GPU")
    if devices and all(d.isdigit() for d in (*devices, *seen)) and sorted(map(int, seen)) != sorted(map(int, devices)):
        raise PowerError(f"nvidia-smi reported GPUs {','.join(seen)}, the deployment holds {','.join(devices)}")
    return total


# amd-smi's JSON, read in ROCm/amdsmi: amdsmi_cli/amdsmi_commands.py (`metric`, its "power" section) and
# amdsmi_cli/amdsmi_logger.py (_print_json_output: a list with one object per GPU, {"gpu": <id>, "power": ...}):
# - ROCm 6.1 on (commit 25ef420, 2024-04; still so in rocm-systems projects/amdsmi, 2025): "power":
#   {"socket_power": {"value": 10, "unit": "W"}, "gfx_voltage": {"value": 6, "unit": "mV"}, ...,
#   "power_management": "ENABLED", "throttle_status": "UNTHROTTLED"}, the sample of CHANGELOG.md under ROCm
#   6.1.0, "Added units of measure to JSON output". socket_power (or its value) is "N/A" when not read; the
#   newest add "ubb_power" (the baseboard's, not a GPU's: not summed).
# - ROCm 6.0 (commit 18d8087, 2024-01): "power": {"current_power": 10, "average_power": ... (only when current
#   is "N/A"), "current_gfx_voltage": ..., ...}: plain numbers, in watts (units only in human output), and one
#   GPU printed as a bare object, not a list.
# - 2023 (commit d839192): "average_socket_power" (renamed current_power later), plain numbers.
# {"gpu_data": [...]} (how newer amd-smi wraps `static`) is accepted too.
_AMD_KEYS = ("socket_power", "current_socket_power", "current_power", "average_socket_power", "average_power")


def _amd_watts(value: Any) -> float | None:
    if isinstance(value, dict):
        unit = str(value.get("unit", "W")).strip()
        scale = {"W": 1.0, "mW": 1e-3, "uW": 1e-6}.get(unit)
        inner = _amd_watts(value.get("value"))
        return None if inner is None or scale is None else inner * scale
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.removesuffix("W").strip())
        except ValueError:
            return None
    return None


def parse_amd_smi(text: str, devices: Sequence[str] = ()) -> float:
    """Watts summed over the GPUs of `amd-smi metric --power --json`, socket power of each (see above)."""
    start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
    try:
        data = json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        data = data.get("gpu_data", [data])
    if not isinstance(data, list) or not data:
        raise PowerError(f"amd-smi printed no JSON list of GPUs: {text.strip()[:80]!r}")
    total, seen = 0.0, []
    for gpu in data:
        power = gpu.get("power") if isinstance(gpu, dict) else None
        if not isinstance(power, dict):
            raise PowerError(f"amd-smi printed no power section: {json.dumps(gpu)[:80]}")
        which = str(gpu.get("gpu", "?"))
        key = next((k for k in _AMD_KEYS if _amd_watts(power.get(k)) is not None), None)
        if key is None:
            shown = {k: power[k] for k in _AMD_KEYS if k in power}
            raise PowerError(f"amd-smi reports no socket power for GPU {which}: {json.dumps(shown or power)[:100]}")
        watts = _amd_watts(power[key])
        assert watts is not None
        total += watts
        seen.append(which)
    if devices and all(d.isdigit() for d in (*devices, *seen)) and sorted(map(int, seen)) != sorted(map(int, devices)):
        raise PowerError(f"amd-smi reported GPUs {','.join(seen)}, the deployment holds {','.join(devices)}")
    return total


def rapl_packages(root: Path = RAPL_ROOT) -> list[Path]:
    """The package domains under a powercap root (intel-rapl:0, intel-rapl:1; psys and sub-domains left out);
    raises PowerError when there are none."""
    if not root.is_dir():
        raise PowerError(f"no {root} here (no RAPL energy counters readable)")
    found = []
    for d in sorted(root.iterdir()):
        if not _PACKAGE.fullmatch(d.name):
            continue
        try:
            name = (d / "name").read_text().strip()
        except OSError:
            name = "package"
        if name.startswith("package"):
            found.append(d)
    if not found:
        raise PowerError(f"no RAPL package domain under {root} (no intel-rapl:<n> with a package-<n> name)")
    return found


def read_rapl(domains: Sequence[Path]) -> list[tuple[int, int]]:
    """(energy_uj, max_energy_range_uj) of each domain; PowerError when a counter cannot be read."""
    out = []
    for d in domains:
        try:
            out.append((int((d / "energy_uj").read_text()), int((d / "max_energy_range_uj").read_text())))
        except PermissionError:
            raise PowerError(f"{d / 'energy_uj'} is not readable by this user (RAPL counters are often "
                             "root-only)") from None
        except (OSError, ValueError) as exc:
            raise PowerError(f"{d / 'energy_uj'}: {exc}") from None
    return out


def rapl_delta_j(before: Sequence[tuple[int, int]], after: Sequence[tuple[int, int]]) -> float:
    """Joules between two reads, summed over domains; a counter that wrapped adds its range."""
    total = 0
    for (e0, _), (e1, span) in zip(before, after, strict=True):
        total += e1 - e0 if e1 >= e0 else e1 + span - e0
    return total / 1e6


# ---- the sampler -----------------------------------------------------------------------------------------
def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise PowerError(f"{argv[0]} gave no answer in {CALL_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise PowerError(f"{argv[0]} could not run: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()
        raise PowerError(f"{' '.join(argv[:3])} exited {done.returncode}: {tail[-1][:120] if tail else 'no output'}")
    return done.stdout


class PowerSampler:
    """Polls device power during a level. `unavailable`: a reason known beforehand (no numbers, no polling)."""

    def __init__(self, vendor: str, devices: Sequence[str] = (), interval_s: float = INTERVAL_S,
                 rapl_root: Path = RAPL_ROOT, unavailable: str = "") -> None:
        self.vendor, self.devices, self.interval_s = vendor, tuple(devices), interval_s
        self.rapl_root = rapl_root
        self._why = unavailable
        self._what = ""
        self._poll: Callable[[], tuple[str, float]] | None = None  # ("W", watts now) or ("J", joules since last)
        self._samples: list[tuple[float, float]] = []  # (monotonic s, joules since the first sample)
        self._last_w: float | None = None
        self._rapl: tuple[list[Path], list[tuple[int, int]]] | None = None
        self._failed, self._first_failure = 0, ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # what to poll ------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        ids = ",".join(self.devices)
        if self.vendor == "nvidia":
            if shutil.which("nvidia-smi") is None:
                raise PowerError("nvidia-smi not found")
            if not self.devices:
                raise PowerError("no leased device ids: the deployment's GPUs are not known")
            argv = ["nvidia-smi", "--query-gpu=index,power.draw", "--format=csv,noheader,nounits", "-i", ids]
            self._what = f"nvidia-smi power.draw of GPU(s) {ids}"
            self._poll = lambda: ("W", parse_nvidia_smi(_run(argv), self.devices))
        elif self.vendor == "amd":
            if shutil.which("amd-smi") is None:
                raise PowerError("amd-smi not found")
            if not self.devices:
                raise PowerError("no leased device ids: the deployment's GPUs are not known")
            argv = ["amd-smi", "metric", "--power", "--json", "-g", *self.devices]
            self._what = f"amd-smi socket power of GPU(s) {ids}"
            self._poll = lambda: ("W", parse_amd_smi(_run(argv), self.devices))
        elif self.vendor == "cpu":
            domains = rapl_packages(self.rapl_root)
            self._rapl = (domains, read_rapl(domains))
            self._what = (f"RAPL package energy of {len(domains)} socket(s) ({self.rapl_root}): the whole host, "
                          "client included")
            self._poll = self._rapl_joules
        else:
            raise PowerError(f"no power source for vendor {self.vendor!r}")

    def _rapl_joules(self) -> tuple[str, float]:
        """Joules since the previous read. Re-based at each poll, so a counter wraps at most once between two
        reads (a typical range, max_energy_range_uj = 262143328850, wraps in ~15 min at 300 W)."""
        assert self._rapl is not None
        domains, before = self._rapl
        now = read_rapl(domains)
        self._rapl = (domains, now)
        return "J", rapl_delta_j(before, now)

    def _sample(self) -> None:
        assert self._poll is not None
        t0 = time.monotonic()
        try:
            kind, value = self._poll()
        except PowerError as exc:
            self._failed += 1
            self._first_failure = self._first_failure or str(exc)
            return
        t = (t0 + time.monotonic()) / 2  # a tool's reading stands for the middle of its call
        if kind == "J":
            self._samples.append((t, (self._samples[-1][1] if self._samples else 0.0) + value))
            return
        if self._samples and self._last_w is not None:
            t_prev, e_prev = self._samples[-1]
            self._samples.append((t, e_prev + (self._last_w + value) / 2 * (t - t_prev)))
        else:
            self._samples.append((t, 0.0))
        self._last_w = value

    def _loop(self) -> None:
        while True:
            t0 = time.monotonic()
            self._sample()
            if self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - t0))):
                return

    # the context manager -------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        if self._why:
            return self
        try:
            self._setup()
            if self.vendor != "cpu":  # the first reading must work, or there is no point polling
                self._sample()
                if not self._samples:
                    raise PowerError(self._first_failure)
                self._failed, self._first_failure = 0, ""
            else:
                self._samples.append((time.monotonic(), 0.0))
        except PowerError as exc:
            self._why = str(exc)
            return self
        except Exception as exc:  # power never fails a level
            self._why = f"power sampler: {type(exc).__name__}: {exc}"
            return self
        self._thread = threading.Thread(target=self._wait_then_loop, daemon=True, name="power-sampler")
        self._thread.start()
        return self

    def _wait_then_loop(self) -> None:
        try:
            if not self._stop.wait(self.interval_s):
                self._loop()
        except Exception as exc:  # a thread's exception would vanish: keep it as the reason
            self._why = self._why or f"power sampler: {type(exc).__name__}: {exc}"

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        try:
            self._sample()  # the window ends now
        except Exception as err:
            self._why = self._why or f"power sampler: {type(err).__name__}: {err}"

    # the result ---------------------------------------------------------------------------------------------
    def reading(self, last_s: float | None = None) -> Reading:
        """Mean watts and joules over the window, or over its last `last_s` seconds (clipped to the window)."""
        s = self._samples
        if self._why:
            return Reading(None, None, 0.0, self._why)
        if len(s) < 2:
            why = f": {self._first_failure}" if self._first_failure else ""
            return Reading(None, None, 0.0, f"fewer than two power samples{why}")
        gap = max(b[0] - a[0] for a, b in pairwise(s))
        if gap > MAX_GAP_S:
            return Reading(None, None, 0.0, f"no power sample for {gap:.1f} s ({self._first_failure or 'slow tool'})")
        t_end, e_end = s[-1]
        t_start = s[0][0] if last_s is None or last_s <= 0 else max(s[0][0], t_end - last_s)
        joules = e_end - _at(s, t_start)
        seconds = t_end - t_start
        if seconds <= 0:
            return Reading(None, None, 0.0, "a power window of no length")
        note = self._what + (f"; some polls failed: {self._first_failure}" if self._failed else "")
        return Reading(joules / seconds, joules, seconds, note)


def _at(samples: Sequence[tuple[float, float]], t: float) -> float:
    """Joules so far at time t, linear between samples."""
    for (t0, e0), (t1, e1) in pairwise(samples):
        if t0 <= t <= t1:
            return e0 if t1 == t0 else e0 + (e1 - e0) * (t - t0) / (t1 - t0)
    return samples[0][1] if t < samples[0][0] else samples[-1][1]
