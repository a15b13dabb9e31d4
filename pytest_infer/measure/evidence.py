"""The stack is what it claims: what a launched deployment runs, read back from what it reports about itself.

A launcher that silently drops a flag (InferenceX once lost `--ep-size`: an eval reported under EP8 ran
without expert parallelism) measures the wrong thing under the right label. After traffic, each serving
role's own account is read: its start-up log line of non-default arguments, its resolved engine config
line, its /metrics counters and engine ranks. They are compared with the stack's optimizations by the
conditions the engine file declares (matrices/engines/<engine>.yaml `evidence:`): a claimed optimization
must show, one that is not claimed must not. Any contradiction fails the stack, naming both sides.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import BaseModel

from pytest_infer.deployment import Deployment
from pytest_infer.matrix import EngineEvidence, EvidenceSpec, Matrix
from pytest_infer.measure.metrics import COUNTERS
from pytest_infer.space import BASE, Stack

FAILED = "the stack is not what it claims"
_UNSET = frozenset({"", "None", "False", "[]", "{}", "()"})
_SHOWN = 100  # characters of a value shown in a message
_SEEN = 60  # ... and in the one line of what was seen


class Evidence(BaseModel):
    """What a deployment showed of its stack's claims: claim -> what was seen (one short line), the
    contradictions (each names the claim and what the deployment reported), and the log lines read."""

    seen: dict[str, str] = {}
    contradictions: list[str] = []
    lines: list[str] = []  # "<role>.log: <line as logged>" (config lines: only the keys checked)

    @property
    def ok(self) -> bool:
        return not self.contradictions

    def failure(self) -> str:
        """The measurement error of a contradicted stack: first line the contradictions, then the log lines."""
        return f"{FAILED}: " + "; ".join(self.contradictions) + "".join(f"\n  {ln}" for ln in self.lines)

    def summary(self) -> str:
        """One line for the report's applied-configuration table."""
        if self.contradictions:
            return "CONTRADICTED: " + "; ".join(self.contradictions)
        return "; ".join(f"{k}: {v}" for k, v in self.seen.items())


@dataclass
class RoleReport:
    """What one serving role said about itself."""

    name: str
    args: dict[str, str] | None = None  # non-default arguments as logged (None: no such line)
    config: dict[str, str] | None = None  # resolved engine config (None: no such line)
    counters: dict[str, float] = field(default_factory=dict)  # /metrics sample -> total since launch
    ranks: int | None = None  # distinct values of the rank label on /metrics (None: not exposed)
    metrics_answered: bool = False
    lines: list[str] = field(default_factory=list)


# ---- parsing what an engine says ----------------------------------------------------------------------
def split_top(text: str, sep: str) -> list[str]:
    """`text` split at each `sep` outside brackets and quotes."""
    out: list[str] = []
    depth, quote, start, i = 0, "", 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return [p.strip() for p in out if p.strip()]


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        try:
            got = ast.literal_eval(value)
            return got if isinstance(got, str) else value
        except (ValueError, SyntaxError):
            return value[1:-1]
    return value


def _find(log: str, marker: str) -> str | None:
    """The first log line holding `marker` (the launcher's own `$ argv` line excluded)."""
    if not marker:
        return None
    return next((ln for ln in log.splitlines() if marker in ln and not ln.startswith("$ ")), None)


def parse_args_line(line: str, marker: str) -> dict[str, str]:
    """`... non-default args: {'key': value, ...}` -> key -> value as logged (strings unquoted). Values that
    are not literals (vLLM logs KVTransferConfig(...) objects) are kept as text."""
    body = line.split(marker, 1)[1].strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    out: dict[str, str] = {}
    for item in split_top(body, ","):
        key, colon, value = item.partition(":")  # keys are quoted identifiers: the first colon ends them
        if colon:
            out[_unquote(key)] = _unquote(value)
    return out


def parse_config_line(line: str, marker: str) -> dict[str, str]:
    """`... with config: key=value, key=value, ...` -> key -> value as logged (strings unquoted)."""
    out: dict[str, str] = {}
    last = ""
    for item in split_top(line.split(marker, 1)[1], ","):
        key, eq, value = item.partition("=")
        if eq and key.strip().isidentifier():
            last = key.strip()
            out[last] = _unquote(value)
        elif last:  # a comma the splitter could not see (unbracketed text): part of the previous value
            out[last] += f", {item}"
    return out


def parse_metrics(text: str, rank_label: str = "") -> tuple[dict[str, float], int | None]:
    """Prometheus text -> (sample name -> value summed over its labels, distinct values of `rank_label`)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    ranks: set[str] = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[s.name] = totals.get(s.name, 0.0) + float(s.value)
            if rank_label and rank_label in s.labels:
                ranks.add(s.labels[rank_label])
    return totals, (len(ranks) if ranks else None)


def role_report(name: str, log: str, evidence: EngineEvidence, metrics: str | None = None,
                counters: Mapping[str, float] | None = None) -> RoleReport:
    """One role's account from its log text and its /metrics text (None: it did not answer); `counters`
    (sample -> count, e.g. summed over the levels of a sweep) add to what /metrics says."""
    r = RoleReport(name)
    if (line := _find(log, evidence.args_line)) is not None:
        r.args = parse_args_line(line, evidence.args_line)
        r.lines.append(f"{name}.log: {line.strip()}")
    if (line := _find(log, evidence.config_line)) is not None:
        r.config = parse_config_line(line, evidence.config_line)
        keys = sorted({k for spec in evidence.optimizations.values() for s in (spec, *spec.by_vendor.values())
                       for k in s.config})
        if shown := [f"{k}={r.config[k]}" for k in keys if k in r.config]:
            r.lines.append(f"{name}.log engine config: {', '.join(shown)}")
    if metrics is not None:
        try:
            r.counters, r.ranks = parse_metrics(metrics, evidence.rank_label)
            r.metrics_answered = True
        except ValueError:
            pass
    for sample, value in (counters or {}).items():
        r.counters[sample] = max(r.counters.get(sample, 0.0), value)
    return r


# ---- judging -------------------------------------------------------------------------------------------
def holds(condition: str, value: str | None) -> bool:
    """`value` (as reported; None: not reported) meets `condition` ("*", ">N", or globs joined by "|")."""
    if value is None:
        return False
    if condition == "*":
        return value.strip() not in _UNSET
    if condition.startswith(">"):
        try:
            return float(value) > float(condition[1:])
        except ValueError:
            return False
    return any(fnmatch.fnmatchcase(value, alt) for alt in condition.split("|"))


def _want(key: str, condition: str) -> str:
    return key if condition == "*" else f"{key}{condition}" if condition.startswith(">") else f"{key} {condition!r}"


def _short(value: str, n: int = _SHOWN) -> str:
    return value if len(value) <= n else value[:n - 3] + "..."


def _name(sample: str) -> str:
    return sample.split(":", 1)[-1].removesuffix("_total")


def _roles(names: Sequence[str]) -> str:
    return ", ".join(names)


def _fields(spec: EvidenceSpec, reports: Sequence[RoleReport], which: str, marker: str,
            what: str) -> tuple[list[str], list[str], list[str]]:
    """(seen, missing, present) for the args or config conditions of `spec` over every serving role."""
    seen: list[str] = []
    missing: list[str] = []
    present: list[str] = []
    for key, cond in getattr(spec, which).items():
        got: dict[str, list[str]] = {}
        for r in reports:
            values: dict[str, str] | None = getattr(r, which)
            if values is None:
                missing.append(f"{r.name} logged no {marker.strip()!r} line")
                continue
            value = values.get(key)
            if holds(cond, value):
                got.setdefault(_short(str(value), _SEEN), []).append(r.name)
                present.append(f"{key} {_short(str(value))} in {r.name}'s {what}")
            elif value is None or value.strip() in _UNSET:
                missing.append(f"no {_want(key, cond)} in {r.name}'s {what}"
                               + (f" ({key}={value})" if value is not None else ""))
            else:
                missing.append(f"{key} {_short(value)} in {r.name}'s {what}, not {_want(key, cond)}")
        seen += [f"{key} {v} on {_roles(names)}" for v, names in got.items()]
    return seen, list(dict.fromkeys(missing)), present


def _counters(spec: EvidenceSpec, reports: Sequence[RoleReport]) -> tuple[list[str], list[str], list[str]]:
    seen: list[str] = []
    missing: list[str] = []
    present: list[str] = []
    for sample in spec.counters:
        counted = {r.name: r.counters[sample] for r in reports if r.counters.get(sample, 0.0) > 0}
        if counted:
            seen.append(f"{sum(counted.values()):g} {_name(sample)} on {_roles(list(counted))}")
            present.append(f"{sample} {sum(counted.values()):g} on {_roles(list(counted))}")
        else:
            states = [f"{r.name}: {'0' if sample in r.counters else 'absent' if r.metrics_answered else 'no /metrics'}"
                      for r in reports]
            missing.append(f"{sample} never counted on any role ({', '.join(states)})")
    return seen, missing, present


def _ranks(spec: EvidenceSpec, reports: Sequence[RoleReport], label: str) -> tuple[list[str], list[str], list[str]]:
    seen: list[str] = []
    missing: list[str] = []
    present: list[str] = []
    if spec.ranks is None:
        return seen, missing, present
    for r in reports:
        if r.ranks is None:
            continue  # not exposed: nothing to read
        line = f"{r.ranks} engine rank(s) ({label}) on {r.name}'s /metrics"
        if holds(spec.ranks, str(r.ranks)):
            seen.append(line)
            present.append(line)
        else:
            missing.append(f"{line}, not {spec.ranks}")
    return seen, missing, present


def judge(evidence: EngineEvidence, vendor: str, opts: Sequence[str], reports: Sequence[RoleReport]) -> Evidence:
    """The claims of a stack with `opts` against what its serving roles reported."""
    out = Evidence()
    names = [r.name for r in reports]
    for r in reports:
        out.lines += r.lines
    for opt in opts:
        if opt not in evidence.optimizations:
            out.seen[opt] = "no evidence declared for it in the engine file"
    unclaimed = []
    for opt, declared in evidence.optimizations.items():
        spec = declared.resolve(vendor)
        parts = [_fields(spec, reports, "args", evidence.args_line, evidence.args_name),
                 _fields(spec, reports, "config", evidence.config_line, "engine config"),
                 _counters(spec, reports), _ranks(spec, reports, evidence.rank_label)]
        seen = [s for p in parts for s in p[0]]
        missing = [m for p in parts for m in p[1]]
        present = [s for p in parts for s in p[2]]
        if opt in opts:
            out.seen[opt] = "; ".join(seen + missing) or "nothing to read"
            if missing:
                out.contradictions.append(f"claims {opt}: " + ", ".join(missing))
        elif present:
            out.contradictions.append(f"does not claim {opt}: " + ", ".join(present))
        elif spec.args or spec.config or spec.counters or spec.ranks:
            unclaimed.append(opt)
    if not opts:
        out.seen[BASE] = (f"no sign of {', '.join(unclaimed)} on {_roles(names)}" if unclaimed
                          else f"{_roles(names)} answered")
    ranks = [f"{r.name} {r.ranks} rank(s)" if r.ranks is not None else r.name + ("" if r.metrics_answered
                                                                                   else " (no /metrics)")
             for r in reports]
    out.seen["roles"] = ", ".join(ranks) or "none"
    if not reports:
        out.contradictions.append("no serving role answered")
    return out


# ---- a launched deployment -----------------------------------------------------------------------------
def scrape(url: str, timeout_s: float = 5.0) -> str | None:
    """One role's /metrics text; None when it does not answer."""
    try:
        r = httpx.get(f"{url}/metrics", timeout=timeout_s)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


def level_counters(levels: Iterable[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """role -> /metrics sample -> count, summed over the levels' scraped metrics (Level.metrics)."""
    sample_of = {key: sample for sample, key in COUNTERS.items()}
    out: dict[str, dict[str, float]] = {}
    for metrics in levels:
        for role, values in metrics.items():
            for key, value in values.items():
                if key in sample_of:
                    got = out.setdefault(role, {})
                    got[sample_of[key]] = got.get(sample_of[key], 0.0) + value
    return out


def read_back(matrix: Matrix, stack: Stack, dep: Deployment, log_dir: Path,
              levels: Iterable[Mapping[str, Mapping[str, float]]] = ()) -> Evidence | None:
    """What the launched `dep` of `stack` runs, after traffic, against what the stack claims: its serving
    roles' logs in `log_dir`, their /metrics now, and the metrics scraped around `levels`. None when the
    engine file declares no evidence."""
    evidence = matrix.engines[stack.engine].evidence
    if not evidence.optimizations:
        return None
    from_levels = level_counters(levels)
    reports = []
    for role in dep.roles:
        if role.kind == "router" or role.port is None:
            continue
        log = log_dir / f"{role.name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        reports.append(role_report(role.name, text, evidence, scrape(role.url), from_levels.get(role.name)))
    return judge(evidence, matrix.gpus[stack.gpu].vendor, stack.opts, reports)
