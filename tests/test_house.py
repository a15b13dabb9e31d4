"""The shape of the package: no import cycles (function-level and TYPE_CHECKING imports included), and
the suites and reports work on their small objects, without a pytest config or a session."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pytest_infer.lab import Lab
from pytest_infer.options import Options
from pytest_infer.report.rows import Row, StackRow
from pytest_infer.run import Run
from pytest_infer.selection import Selection
from pytest_infer.suite.composability import Composability

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_infer"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its body."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from pkg import submodule` is an import of the submodule (the package's __init__ runs
                # before any submodule anyway); `from pkg import name` of the package
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [node.module, *subs]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_of_the_package_takes_part_in_an_import_cycle() -> None:
    graph = _imports()
    assert "pytest_infer.session" in graph and graph["pytest_infer.plugin"]  # the walk saw the package
    assert _cycles(graph) == []
    # A planted cycle is found: the check can fail.
    assert _cycles({**graph, "pytest_infer.space": graph["pytest_infer.space"] | {"pytest_infer.session"}})


def _options(tmp_path: Path, **kw: object) -> Options:
    base: dict[str, object] = {
        "gpu": "cpu", "suite": "composability", "engines": (), "model": None, "stacks": (), "report_root": tmp_path,
        "results": None, "plan": False, "matrices": None, "fresh": False, "engine_args": None, "repeats": None,
        "devices": None, "lease_dir": None, "launch_timeout_s": 900.0, "baseline_dir": tmp_path / "baselines",
        "baseline_update": False, "baseline_strict": False, "xdist_worker": False, "run_id": None,
        "rootpath": tmp_path}
    return Options(**{**base, **kw})  # type: ignore[arg-type]


def test_a_suite_selects_and_reports_without_a_pytest_config(tmp_path: Path) -> None:
    run = Run.resolve(_options(tmp_path, stacks=("mtp and not disagg and not wideep",)), "composability")
    selection = Selection(run)
    suite = Composability(run, selection, Lab(run, selection))
    chosen = [s.id for s in selection.stacks if selection.selected(s)]
    assert chosen == ["cpu-vllm-mtp", "cpu-vllm-fp4+mtp"]
    assert selection.unsupported(next(s for s in selection.stacks if s.opts == ("fp4", "mtp")))
    rows = [Row("cpu-vllm-base", "passed", "", StackRow(stack="cpu-vllm-base", verdict="pass")),
            Row("cpu-vllm-mtp", "failed", "mtp is slower", StackRow(
                stack="cpu-vllm-mtp", verdict="fail", worst_ratio=0.5, worst_low=0.4, worst_high=0.6,
                interval_method="t", worst_interactivity=12.0, best_part="base", stack_throughput=50.0,
                part_throughput=100.0, ratios={"12.00": 0.5}))]
    text = suite.report(rows).read_text()
    assert text.startswith("# Composability matrix: cpu")
    assert "| `cpu-vllm-mtp`  | FAIL" in text and "0.500 [0.400, 0.600]" in text and "base (50 vs 100)" in text
    assert (tmp_path / "cpu" / "composability.md").is_file()


def test_a_bad_option_is_a_usage_error_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(pytest.UsageError, match="unknown engine 'trtllm' for cpu"):
        Run.resolve(_options(tmp_path, engines=("trtllm",)), "composability")
