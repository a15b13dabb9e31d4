"""Device power around a level (measure/power.py): nvidia-smi and amd-smi output as the tools print it, a
fake nvidia-smi sampled for real, RAPL counters in a fake sysfs tree (with a wrap), the reasons given when
nothing can be read, and the cost table's joules per output token. No engine, no GPU."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_infer.matrix import PricesFile
from pytest_infer.measure.power import (
    PowerError,
    PowerSampler,
    parse_amd_smi,
    parse_nvidia_smi,
    rapl_delta_j,
    rapl_packages,
    read_rapl,
)
from pytest_infer.measure.runner import Runner
from pytest_infer.report.cost import cost_table, joules_per_token
from pytest_infer.report.rows import LevelRow, Row, StackRow
from pytest_infer.store.records import Level

# ---- nvidia-smi -----------------------------------------------------------------------------------------
# `nvidia-smi --query-gpu=index,power.draw --format=csv,noheader,nounits`: one "index, watts" line per GPU.
# Values from real captures in utkuozdemir/nvidia_gpu_exporter, internal/captures/
# linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt and ..._nvidia-h200__590.48.01.txt (their --format=csv
# query, "631.95 W" with units; nounits drops " W"), and ..._nvidia-geforce-rtx-2080-super__595.71.05.txt,
# where power.draw.average reads "[N/A]" (a Turing board has no 1 s average).
NVIDIA_LOAD = "0, 631.95\n1, 627.40\n"
NVIDIA_NA = "0, 631.95\n1, [N/A]\n"


def test_nvidia_smi_sums_the_gpus() -> None:
    assert parse_nvidia_smi(NVIDIA_LOAD, ("0", "1")) == pytest.approx(1259.35)
    assert parse_nvidia_smi("0, 631.95 W\n") == pytest.approx(631.95)  # without nounits


@pytest.mark.parametrize(("text", "devices", "says"), [
    (NVIDIA_NA, ("0", "1"), "power.draw [N/A] for GPU 1"),
    ("0, [Not Supported]\n", ("0",), "[Not Supported]"),
    ("", ("0",), "no GPU"),
    ("No devices were found\n", ("0",), "not 'index, power.draw'"),
    ("0, 70.1\n", ("0", "1"), "reported GPUs 0, the deployment holds 0,1"),
    ("0, abc\n", ("0",), "'abc'"),
])
def test_nvidia_smi_without_a_number_says_why(text: str, devices: tuple[str, ...], says: str) -> None:
    with pytest.raises(PowerError) as exc:
        parse_nvidia_smi(text, devices)
    assert says in str(exc.value)


# ---- amd-smi --------------------------------------------------------------------------------------------
# ROCm 6.1 on: the sample of `amd-smi metric -p --json` in ROCm/amdsmi CHANGELOG.md (ROCm 6.1.0, "Added units
# of measure to JSON output"), the shape amdsmi_cli/amdsmi_commands.py still prints (rocm-systems, 2025).
AMD_61 = """[
    {
        "gpu": 0,
        "power": {
            "socket_power": {"value": 10, "unit": "W"},
            "gfx_voltage": {"value": 6, "unit": "mV"},
            "soc_voltage": {"value": 918, "unit": "mV"},
            "mem_voltage": {"value": 1250, "unit": "mV"},
            "power_management": "ENABLED",
            "throttle_status": "UNTHROTTLED"
        }
    },
    {
        "gpu": 1,
        "power": {
            "socket_power": {"value": 550, "unit": "W"},
            "gfx_voltage": {"value": 806, "unit": "mV"},
            "soc_voltage": {"value": 918, "unit": "mV"},
            "mem_voltage": {"value": 1250, "unit": "mV"},
            "throttle_status": "UNTHROTTLED",
            "power_management": "ENABLED",
            "ubb_power": {"value": 3000, "unit": "W"}
        }
    }
]"""
# ROCm 6.0 (ROCm/amdsmi commit 18d8087, amdsmi_cli/amdsmi_commands.py `metric`): plain numbers in JSON,
# average_power only when current_power is "N/A"; one GPU printed as a bare object (amdsmi_logger.py).
AMD_60 = json.dumps({"gpu": 0, "power": {"current_power": "N/A", "average_power": 301, "current_gfx_voltage": 806,
                                         "current_soc_voltage": 918, "current_mem_voltage": 1250,
                                         "power_limit": 750, "power_management": "ENABLED",
                                         "throttle_status": "UNTHROTTLED"}})


def test_amd_smi_new_shape_sums_socket_power_not_the_baseboard() -> None:
    assert parse_amd_smi(AMD_61, ("0", "1")) == pytest.approx(560.0)


def test_amd_smi_old_shape() -> None:
    assert parse_amd_smi(AMD_60, ("0",)) == pytest.approx(301.0)
    gpu_data = json.dumps({"gpu_data": json.loads(AMD_61)})
    assert parse_amd_smi(gpu_data) == pytest.approx(560.0)


@pytest.mark.parametrize(("text", "says"), [
    (AMD_61.replace('{"value": 550, "unit": "W"}', '"N/A"'), "no socket power for GPU 1"),
    (AMD_61.replace('"value": 550', '"value": "N/A"'), "no socket power for GPU 1"),
    ('[{"gpu": 0, "power": "N/A"}]', "no power section"),
    ("AMDSMI Tool: unable to detect any GPU devices\n", "no JSON list"),
    ("[]", "no JSON list"),
])
def test_amd_smi_without_a_number_says_why(text: str, says: str) -> None:
    with pytest.raises(PowerError) as exc:
        parse_amd_smi(text)
    assert says in str(exc.value)


def test_amd_smi_other_devices_than_leased() -> None:
    with pytest.raises(PowerError, match="reported GPUs 0,1, the deployment holds 2,3"):
        parse_amd_smi(AMD_61, ("2", "3"))


# ---- a fake nvidia-smi, sampled for real ------------------------------------------------------------------
def _tool(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _only_on_path(monkeypatch: pytest.MonkeyPatch, bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_fake_nvidia_smi_gives_mean_power_and_energy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each call: GPU 0 alternates 100 / 200 W, GPU 1 draws 50 W; the arguments are kept to check -i.
    calls = tmp_path / "calls"
    _tool(tmp_path / "bin", "nvidia-smi", f"""echo "$@" >> {calls}
n=$(wc -l < {calls})
if [ $((n % 2)) -eq 0 ]; then w=200.00; else w=100.00; fi
echo "0, $w"
echo "1, 50.00"
""")
    _only_on_path(monkeypatch, tmp_path / "bin")
    t0 = time.monotonic()
    with PowerSampler("nvidia", ("0", "1")) as power:
        time.sleep(1.5)
    wall = time.monotonic() - t0
    got = power.reading()
    assert got.power_w is not None and got.energy_j is not None, got.note
    assert 150.0 <= got.power_w <= 250.0  # between the sums 150 and 250, near their mean 200
    assert got.energy_j == pytest.approx(got.power_w * got.seconds)
    assert 1.0 <= got.seconds <= wall
    assert "nvidia-smi power.draw of GPU(s) 0,1" in got.note
    lines = calls.read_text().splitlines()
    assert len(lines) >= 3  # polled every ~0.5 s, and once at each end
    assert all(ln == "--query-gpu=index,power.draw --format=csv,noheader,nounits -i 0,1" for ln in lines)
    tail = power.reading(last_s=0.6)  # the benchmark's own phase: the window's last seconds
    assert tail.seconds == pytest.approx(0.6)
    assert tail.energy_j == pytest.approx(tail.power_w * 0.6)  # type: ignore[operator]


def test_a_missing_tool_gives_no_numbers_and_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _only_on_path(monkeypatch, tmp_path / "empty")
    for vendor, tool in (("nvidia", "nvidia-smi"), ("amd", "amd-smi")):
        with PowerSampler(vendor, ("0",)) as power:
            pass
        got = power.reading()
        assert (got.power_w, got.energy_j) == (None, None)
        assert got.note == f"{tool} not found"


@pytest.mark.parametrize(("body", "says"), [
    ('echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver." >&2; exit 9',
     "exited 9: NVIDIA-SMI has failed because it couldn't communicate"),
    ('echo "0, [N/A]"', "power.draw [N/A] for GPU 0"),
    ('echo "garbage"', "not 'index, power.draw'"),
])
def test_a_failing_tool_gives_no_numbers_and_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         body: str, says: str) -> None:
    _tool(tmp_path / "bin", "nvidia-smi", body + "\n")
    _only_on_path(monkeypatch, tmp_path / "bin")
    with PowerSampler("nvidia", ("0",)) as power:
        pass
    got = power.reading()
    assert got.power_w is None and got.energy_j is None
    assert says in got.note


def test_gpus_not_known_or_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tool(tmp_path / "bin", "nvidia-smi", 'echo "0, 70.0"\n')
    _only_on_path(monkeypatch, tmp_path / "bin")
    with PowerSampler("nvidia", ()) as power:
        pass
    assert "no leased device ids" in power.reading().note
    with PowerSampler("nvidia", ("0",), unavailable="the devices are on Slurm nodes") as power:
        pass
    assert power.reading().note == "the devices are on Slurm nodes"
    with PowerSampler("tpu", ("0",)) as power:
        pass
    assert power.reading().note == "no power source for vendor 'tpu'"


# ---- RAPL in a fake sysfs tree ----------------------------------------------------------------------------
def _domain(root: Path, name: str, label: str, energy_uj: int, span_uj: int = 262143328850) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{span_uj}\n")
    return d


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    _domain(root, "intel-rapl:0", "package-0", 262143328850 - 2_000_000)  # 2 J before it wraps
    _domain(root, "intel-rapl:0:0", "core", 5_000_000)  # inside package 0: not counted twice
    _domain(root, "intel-rapl:1", "package-1", 10_000_000)
    _domain(root, "intel-rapl:2", "psys", 1)  # the platform, not a package
    _domain(root, "intel-rapl-mmio:0", "package-0", 1)  # the same package through MMIO
    return root


def test_rapl_package_domains_only(powercap: Path) -> None:
    assert [d.name for d in rapl_packages(powercap)] == ["intel-rapl:0", "intel-rapl:1"]


def test_rapl_counter_wrap() -> None:
    span = 262143328850
    assert rapl_delta_j([(span - 2_000_000, span), (10, span)], [(3_000_000, span), (1_000_010, span)]) \
        == pytest.approx(5.0 + 1.0)


def test_rapl_sampled_across_a_wrap(powercap: Path) -> None:
    with PowerSampler("cpu", rapl_root=powercap, interval_s=0.2) as power:
        time.sleep(0.5)  # polls that see no change
        (powercap / "intel-rapl:0" / "energy_uj").write_text("3000000\n")  # wrapped: 2 J + 3 J
        (powercap / "intel-rapl:1" / "energy_uj").write_text("40000000\n")  # 30 J
        time.sleep(0.3)
    got = power.reading()
    assert got.energy_j == pytest.approx(35.0)
    assert got.power_w == pytest.approx(35.0 / got.seconds)
    assert "RAPL package energy of 2 socket(s)" in got.note and "the whole host" in got.note


def test_rapl_not_readable(tmp_path: Path, powercap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-powercap"
    with PowerSampler("cpu", rapl_root=missing) as power:
        pass
    assert power.reading().power_w is None
    assert power.reading().note == f"no {missing} here (no RAPL energy counters readable)"
    empty = tmp_path / "empty-powercap"
    empty.mkdir()
    assert "no RAPL package domain" in PowerSampler("cpu", rapl_root=empty).__enter__().reading().note
    locked = powercap / "intel-rapl:1" / "energy_uj"
    locked.chmod(0)  # root-only, as on most kernels since 2020
    if os.geteuid() == 0:  # root reads a file whatever its mode: refuse it as the kernel would
        read_text = Path.read_text

        def refuse(self: Path, *args: Any, **kwargs: Any) -> str:
            if self == locked:
                raise PermissionError(13, "Permission denied", str(self))
            return read_text(self, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(PowerError, match="is not readable by this user"):
        read_rapl(rapl_packages(powercap))
    with PowerSampler("cpu", rapl_root=powercap) as power:
        pass
    assert "intel-rapl:1/energy_uj is not readable by this user" in power.reading().note


def test_this_machine_says_so_on_cpu() -> None:
    if Path("/sys/class/powercap").is_dir():
        pytest.skip("this machine has /sys/class/powercap")
    with PowerSampler("cpu") as power:
        pass
    got = power.reading()
    assert (got.power_w, got.energy_j) == (None, None)
    assert got.note == "no /sys/class/powercap here (no RAPL energy counters readable)"


# ---- wiring: the runner's devices, the stored level ----------------------------------------------------------
def _runner(vendor: str, slurm: object = None) -> Any:
    return SimpleNamespace(matrix=SimpleNamespace(gpus={"g": SimpleNamespace(vendor=vendor)}), slurm=slurm)


def test_runner_samples_the_devices_its_roles_were_given() -> None:
    dep = SimpleNamespace(roles=[SimpleNamespace(env={"CUDA_VISIBLE_DEVICES": "2,3"}),
                                 SimpleNamespace(env={"CUDA_VISIBLE_DEVICES": "4"}), SimpleNamespace(env={})])
    stack: Any = SimpleNamespace(gpu="g")
    sampler = Runner._power(_runner("nvidia"), stack, dep)
    assert (sampler.vendor, sampler.devices) == ("nvidia", ("2", "3", "4"))
    amd = SimpleNamespace(roles=[SimpleNamespace(env={"HIP_VISIBLE_DEVICES": "1"})])
    assert Runner._power(_runner("amd"), stack, amd).devices == ("1",)
    assert Runner._power(_runner("cpu"), stack, dep).devices == ()
    with Runner._power(_runner("nvidia", slurm=object()), stack, dep) as power:
        pass
    assert "Slurm" in power.reading().note


def test_level_keeps_power_and_energy() -> None:
    lv = Level(concurrency=4, num_prompts=8, completed=8, failed=0, duration_s=10.0, output_throughput=100.0,
               total_throughput=200.0, per_gpu_throughput=200.0, per_gpu_output_throughput=100.0,
               per_decode_gpu_output_throughput=100.0, interactivity=20.0, median_ttft_ms=1.0, median_tpot_ms=50.0,
               median_e2el_ms=1.0, p99_ttft_ms=1.0, p99_tpot_ms=1.0, power_w=300.0, energy_j=3000.0)
    back = Level.model_validate_json(lv.model_dump_json())
    assert (back.power_w, back.energy_j) == (300.0, 3000.0)
    assert Level.model_validate({k: v for k, v in lv.model_dump().items() if k not in ("power_w", "energy_j")}) \
        .power_w is None  # a level stored before power was sampled


# ---- the cost table ---------------------------------------------------------------------------------------
def _row(stack: str, gpus: int, levels: list[tuple[int, float, float, float | None]], note: str = "") -> Row:
    """levels: (concurrency, interactivity, output tok/s per device, watts of the whole deployment)."""
    return Row(stack, "passed", data=StackRow(stack=stack, gpus=gpus, power_note=note or None, levels=[
        LevelRow(concurrency=c, repeat=0, interactivity=x, per_gpu_throughput=2 * y,
                 per_decode_gpu_output_throughput=y, per_gpu_output_throughput=y, median_ttft_ms=1.0,
                 power_w=w, energy_j=None if w is None else w * 10.0)
        for c, x, y, w in levels]))


PRICES = PricesFile(currency="USD", prices={"h100": {"on-demand": 3.6}})


def test_cost_table_shows_joules_per_output_token() -> None:
    base = _row("vllm-base@h100", 1, [(1, 100.0, 100.0, 200.0), (8, 50.0, 400.0, 400.0)],
                note="nvidia-smi power.draw of GPU(s) 0")
    fp8 = _row("vllm-fp8@h100", 2, [(1, 100.0, 150.0, 450.0), (8, 50.0, 500.0, 1000.0)],
               note="nvidia-smi power.draw of GPU(s) 1,2")
    # base: 200 W / 100 tok/s = 2 J/token at 100 tok/s/user, 400 / 400 = 1 at 50; fp8 (2 devices): 450 / 300
    # = 1.5 and 1000 / 1000 = 1
    assert joules_per_token(base) == [(50.0, 1.0), (100.0, 2.0)]
    text = cost_table([base, fp8], PRICES, "h100", "nvidia")
    assert "Joules per output token at matched interactivity" in text
    assert _cells(text, "vllm-base@h100")[-2:] == ["1", "2"]
    assert _cells(text, "vllm-fp8@h100")[-2:] == ["1", "1.5"]
    assert "at 50.0 tok/s/user (J/token)" in text
    assert "nvidia-smi power.draw of GPU(s) 0" in text
    assert "not measured" not in text


def test_cost_table_interpolates_and_never_extrapolates() -> None:
    base = _row("vllm-base@h100", 1, [(1, 100.0, 100.0, 200.0), (4, 75.0, 200.0, 300.0), (8, 50.0, 400.0, 400.0)])
    short = _row("vllm-mtp@h100", 1, [(1, 100.0, 200.0, 300.0), (4, 80.0, 300.0, 330.0)])  # 1.5 and 1.1
    text = cost_table([base, short], PRICES, "h100", "nvidia")
    assert _cells(text, "vllm-mtp@h100")[-3:] == ["", "", "1.5"]  # at 50 and 75: below its levels
    mid = cost_table([base, _row("vllm-x@h100", 1, [(1, 100.0, 100.0, 200.0), (8, 50.0, 400.0, 400.0)])],
                     PRICES, "h100", "nvidia")
    assert _cells(mid, "vllm-x@h100")[-3:] == ["1", "1.5", "2"]  # 75 tok/s/user: halfway between 1 and 2


def test_cost_table_without_energy_keeps_the_reason() -> None:
    rows = [_row("vllm-base@cpu", 1, [(1, 10.0, 10.0, None), (4, 5.0, 30.0, None)],
                 note="no /sys/class/powercap here (no RAPL energy counters readable)")]
    text = cost_table(rows, PricesFile(prices={"cpu": {"committed": 0.01}}), "cpu", "cpu")
    assert "Energy per token: not measured: no /sys/class/powercap here (no RAPL energy counters readable)." in text
    assert "J/token" not in text
    old = cost_table([_row("vllm-base@h100", 1, [(1, 10.0, 10.0, None)])], PRICES, "h100", "nvidia")
    assert "not measured (no power reading stored with these levels; nvidia-smi would give it)" in old


def test_cost_table_names_the_stacks_without_readings() -> None:
    base = _row("vllm-base@h100", 1, [(1, 100.0, 100.0, 200.0), (8, 50.0, 400.0, 400.0)])
    blind = _row("vllm-fp8@h100", 1, [(1, 100.0, 150.0, None), (8, 50.0, 500.0, None)], note="nvidia-smi not found")
    text = cost_table([base, blind], PRICES, "h100", "nvidia")
    assert "No readings for `vllm-fp8@h100`: nvidia-smi not found." in text
    assert _cells(text, "vllm-fp8@h100")[-2:] == ["", ""]
    unpriced = cost_table([base], PricesFile(), "h100", "nvidia")
    assert "No price for h100" in unpriced and _cells(unpriced, "vllm-base@h100")[-2:] == ["1", "2"]


def _cells(text: str, stack: str) -> list[str]:
    """The cells of the last table line naming `stack` (the energy table follows the price table)."""
    line = [ln for ln in text.splitlines() if ln.startswith(f"| `{stack}`")][-1]
    return [c.strip() for c in line.strip("|").split("|")][1:]
