"""`--results DIR` on results measured elsewhere: every result file of the tree is classified into a stack
(and a variant: one model, workload and TP/EP), each group becomes one `Measurement`, saved in the store
format live runs use, and replay reads that store. No engine, no GPU.

InferenceX aggregated files say what ran (`hw`, `framework`, `precision`, ...). Raw `vllm bench serve` /
SGLang files do not: a manifest, `infer-results.yaml` in their folder, names their stack and GPU count.
Where a file says something about its stack (its fields, or an InferenceX result file name), a manifest
that claims otherwise is refused: the stack is what it claims or the replay stops.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pytest_infer.matrix import Matrix
from pytest_infer.replay.ingest import (
    OFF_VALUES,
    OFFLOAD_ON,
    Format,
    Ingested,
    SkipResult,
    check_record,
    field_value,
    inferencex_gpus,
    ingest_record,
    name_fields,
    offload_of,
    read_records,
)
from pytest_infer.space import Stack, parse_label
from pytest_infer.store.records import Level, Measurement, ResultError
from pytest_infer.store.store import SKIPPED, Store

MANIFEST = "infer-results.yaml"
_VARIANT = re.compile(r"^[A-Za-z0-9._-]*$")


class ReplayError(ValueError):
    """Results that cannot be replayed as given: one line naming the file (or folder) and what to do."""


class ManifestEntry(BaseModel):
    """What raw benchmark files (they record neither) ran on: their stack and GPU count. For files that do
    say (InferenceX fields, InferenceX file names), the entry must agree with them."""

    model_config = ConfigDict(extra="forbid")
    files: str  # glob over the file names of the manifest's folder
    stack: str  # a stack label: fp4+mtp, base
    engine: str = "vllm"
    gpu: str | None = None  # default: the run's --gpu
    gpus: int | None = Field(None, ge=1)  # every GPU the per-GPU numbers divide by (prefill + decode)
    decode_gpus: int | None = Field(None, ge=1)
    variant: str = ""


_MANIFEST = TypeAdapter(list[ManifestEntry])


def is_store(root: Path) -> bool:
    """The plugin's own store (what today's --results replays): Measurement JSON with key and levels."""
    for path in root.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "key" in data and "levels" in data:
            return True
    return False


@dataclass(frozen=True)
class _Record:
    source: str
    data: dict[str, Any]
    gpus: int | None = None  # from a manifest, for raw files
    decode_gpus: int | None = None


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() == "true"  # InferenceX writes booleans as bools or as "true"/"false"


def gpu_kind(hw: str, kinds: list[str]) -> str | None:
    """'b200-dgxc-slurm' -> b200, 'MI355-gbt350-...' -> mi355x, 'cluster:mi355x-amds' -> mi355x: the runner
    name starts with the kind (IX AgentX runs on shared clusters write `cluster:<runner>`)."""
    head = re.split(r"[-_\s]", hw.strip().lower().rsplit(":", 1)[-1])[0]
    if not head:
        return None
    if head in kinds:
        return head
    found = [k for k in kinds if k.startswith(head)]
    return found[0] if len(found) == 1 else None


def _k(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def variant_of(data: dict[str, Any]) -> str:
    """Model prefix, workload (1k1k, or the scenario) and parallelism: e.g. dsr1-agentic-tp4-ep4 (PP and PCP
    when above 1: they change the GPU count, IX process_result.py)."""
    model = str(data.get("infmax_model_prefix") or str(data.get("model") or "").rsplit("/", 1)[-1])
    isl, osl = data.get("isl"), data.get("osl")
    work = f"{_k(int(isl))}{_k(int(osl))}" if isl and osl else str(data.get("scenario_type") or "").split("-")[0]
    par = ""
    if data.get("tp"):
        par = f"tp{data['tp']}" + (f"-ep{data['ep']}" if data.get("ep") is not None else "")
        par += "".join(f"-{tag}{int(data[f])}" for f, tag in (("pp", "pp"), ("pcp_size", "pcp"))
                       if int(data.get(f) or 1) > 1)
    text = "-".join(p for p in (model, work, par) if p).lower()
    return re.sub(r"[^a-z0-9._-]+", "-", text).strip("-")


class _Switch(NamedTuple):
    """One optimization a file says is on or off, and how it says so."""

    opt: str
    field: str
    value: Any
    on: bool
    said: str  # "spec_decoding is 'none'", "its name says 'spec-mtp'"


def _switches(data: dict[str, Any], source: str, said: Callable[[str], str] | None = None) -> list[_Switch]:
    """What the fields say about each optimization (in the order opts_of checks them); ReplayError for a
    value that maps to no optimization (a speculative or offload method the matrices do not know)."""
    def tell(field: str) -> str:
        return said(field) if said else f"{field} is {data[field]!r}"

    out: list[_Switch] = []
    if data.get("precision") is not None:  # other precisions are the model's reference
        out.append(_Switch("fp4", "precision", data["precision"], str(data["precision"]).lower() == "fp4",
                           tell("precision")))
    if "spec_decoding" in data:
        spec = str(data.get("spec_decoding") or "none").lower()
        if spec not in OFF_VALUES and spec != "mtp":  # e.g. eagle: never fold into a stack without it
            raise ReplayError(f"{source}: spec_decoding {data['spec_decoding']!r} maps to no optimization "
                              "(known: mtp)")
        out.append(_Switch("mtp", "spec_decoding", data["spec_decoding"], spec == "mtp", tell("spec_decoding")))
    if "disagg" in data or "is_multinode" in data:
        dis, multinode = _truthy(data.get("disagg")), _truthy(data.get("is_multinode"))
        field = "disagg" if dis or "is_multinode" not in data else "is_multinode"
        out.append(_Switch("disagg", field, data[field], dis or multinode, tell(field)))  # multinode is disagg
        if "dp_attention" in data:
            wide = multinode and _truthy(data["dp_attention"]) and int(data.get("ep") or 1) > 1
            why = "dp_attention" if wide or not _truthy(data["dp_attention"]) else field if not multinode else "ep"
            out.append(_Switch("wideep", why, data.get(why), wide, tell(why)))
    off = offload_of(data)
    if off is not None:
        if off.on is None:
            known = ", ".join(sorted(OFFLOAD_ON | {"none", "off"}))
            raise ReplayError(f"{source}: {off.field} {off.value!r} maps to no optimization (known: {known})")
        out.append(_Switch("kvoffload", off.field, off.value, off.on, tell(off.field)))
    return out


def opts_of(data: dict[str, Any], source: str, optimizations: list[str]) -> tuple[str, ...]:
    """The optimizations an InferenceX file ran with, in matrix order."""
    wanted = [s for s in _switches(data, source) if s.on]
    for s in wanted:
        if s.opt not in optimizations:
            raise ReplayError(f"{source}: {s.field} {s.value!r} needs optimization {s.opt!r} in the matrices "
                              "(--infer-matrices)")
    return tuple(o for o in optimizations if o in {s.opt for s in wanted})


def _as_written(data: dict[str, Any], field: str) -> tuple[str, Any]:
    """The file's own field (and value) behind a normalised name_fields() field."""
    if field == "conc":
        return ("conc", data["conc"]) if "conc" in data else ("users", data.get("users"))
    if field == "offload_mode":
        off = offload_of(data)
        return (off.field, off.value) if off else (field, None)
    return field, data.get(field)


def _check_name(file_name: str, data: dict[str, Any]) -> None:
    """An InferenceX file name that contradicts the file's own fields: a mislabeled or edited result."""
    for nf in name_fields(file_name):
        mine = field_value(data, nf.field)
        if mine is not None and mine != nf.value:
            field, value = _as_written(data, nf.field)
            raise ReplayError(f"{file_name}: its name says {nf.token!r} but {field} is {value!r}")


def _check_claim(src: str, file_name: str, data: dict[str, Any], fmt: Format, entry: ManifestEntry, index: int,
                 claimed: tuple[str, ...]) -> None:
    """A manifest entry's stack and GPU count against what the file says (InferenceX fields; the InferenceX
    file name for any format)."""
    own = data if fmt == "inferencex" else {}
    _check_name(file_name, own)
    named = {nf.field: nf for nf in name_fields(file_name)}
    merged = {f: nf.value for f, nf in named.items()} | own

    def said(field: str) -> str:
        if field in own:
            return f"{field} is {own[field]!r}"
        return f"its name says {named[field].token!r}" if field in named else f"{field} is {merged.get(field)!r}"

    where = f"{Path(src).name}: claims {entry.stack} (manifest entry {index})"
    for s in _switches(merged, src, said):
        if s.on != (s.opt in claimed):
            raise ReplayError(f"{where} but {s.said}")
    if entry.gpus is None:
        return
    counted: tuple[int, int] | None = None
    how = ""
    if own:
        try:
            counted, how = inferencex_gpus(own, src), "the file counts"
        except ResultError:
            counted = None
    elif "tp" in named and not named["disagg"].value:
        g = named["tp"].value * (named["pp"].value if "pp" in named else 1) * (
            named["pcp_size"].value if "pcp_size" in named else 1)
        counted, how = (g, g), f"its name says {named['tp'].token!r}:"
    if counted is not None and (entry.gpus, entry.decode_gpus or entry.gpus) != counted:
        raise ReplayError(f"{Path(src).name}: manifest entry {index} says gpus: {entry.gpus}"
                          + (f", decode_gpus: {entry.decode_gpus}" if entry.decode_gpus else "")
                          + f" but {how} {counted[0]} GPUs ({counted[1]} decode)")


def _manifest(folder: Path, matrix: Matrix) -> list[ManifestEntry] | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        entries = _MANIFEST.validate_python(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as exc:
        raise ReplayError(f"{path}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ReplayError(f"{path}: key {'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}") from None
    for i, e in enumerate(entries):
        try:
            parse_label(e.stack, list(matrix.optimizations))
        except ValueError as exc:
            raise ReplayError(f"{path}: entry {i} stack {e.stack!r}: {exc}") from None
        if e.engine not in matrix.engines:
            raise ReplayError(f"{path}: entry {i}: unknown engine {e.engine!r}; valid: {', '.join(matrix.engines)}")
        if e.gpu is not None and e.gpu not in matrix.gpus:
            raise ReplayError(f"{path}: entry {i}: unknown GPU kind {e.gpu!r}; valid: {', '.join(matrix.gpus)}")
        if not _VARIANT.match(e.variant):
            raise ReplayError(f"{path}: entry {i}: variant {e.variant!r} may hold only letters, digits, '.', '_', '-'")
    return entries


def _skip_lines(path: Path, records: list[tuple[str, dict[str, Any]]], why: list[tuple[str, str]]) -> list[str]:
    """One 'path: reason' line per skipped file (its records all skipped for one reason), else per record."""
    reasons = {r for _, r in why}
    if len(why) == len(records) and len(reasons) == 1:
        n = f" ({len(records)} records)" if len(records) > 1 else ""
        return [f"{path}: {reasons.pop()}{n}"]
    return [f"{src}: {r}" for src, r in why]


def classify(root: Path, matrix: Matrix, gpu: str, engines: list[str],
             skip: Path | None = None) -> tuple[dict[Stack, list[_Record]], list[str]]:
    """Every result record under `root`, by stack, for this GPU kind and these engines, and the files (or
    records) skipped, one 'path: reason' line each: not a result (unknown format, e.g. a config JSON) or a
    request-rate run. Files that cannot be read (not UTF-8, broken JSON) are a usage error: one ReplayError
    naming all of them, one line each. `skip`: our own output, when the report dir lies inside the tree."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file()
                   and not (skip is not None and p.is_relative_to(skip)))
    if not files:
        raise ReplayError(f"--results {root}: no *.json or *.jsonl result files")
    optimizations, kinds = list(matrix.optimizations), list(matrix.gpus)
    skipped: list[str] = []
    unreadable: list[str] = []
    read: list[tuple[Path, list[tuple[str, dict[str, Any]]]]] = []
    for path in files:
        try:
            read.append((path, read_records(path)))
        except SkipResult as exc:
            skipped.append(str(exc))
        except ResultError as exc:
            unreadable.append(str(exc))
    if unreadable:
        raise ReplayError("\n".join(unreadable))

    groups: dict[Stack, list[_Record]] = {}
    elsewhere: Counter[str] = Counter()  # results for another GPU kind or engine, for the error message
    manifests: dict[Path, list[ManifestEntry] | None] = {}
    for path, records in read:
        kept: list[tuple[str, dict[str, Any], Format]] = []
        why: list[tuple[str, str]] = []
        for src, d in records:
            try:
                kept.append((src, d, check_record(d, src)))
            except SkipResult as exc:
                why.append((src, str(exc).removeprefix(f"{src}: ")))
        skipped.extend(_skip_lines(path, records, why) if why else [])
        if not kept:
            continue
        if path.parent not in manifests:
            manifests[path.parent] = _manifest(path.parent, matrix)
        entries = manifests[path.parent]
        index, entry = next(((i, e) for i, e in enumerate(entries or []) if fnmatch.fnmatch(path.name, e.files)),
                            (-1, None))
        formats = {fmt for _, _, fmt in kept}
        placed: list[tuple[Stack, _Record]] = []
        if entry is not None:
            if formats != {"inferencex"} and entry.gpus is None:
                raise ReplayError(f"{path.parent / MANIFEST}: the entry for {entry.files!r} needs gpus: "
                                  f"(raw benchmark files such as {path.name} record no GPU count)")
            claimed = parse_label(entry.stack, optimizations)
            for src, d, fmt in kept:
                _check_claim(src, path.name, d, fmt, entry, index, claimed)
            stack = Stack(entry.gpu or gpu, entry.engine, claimed, entry.variant)
            placed = [(stack, _Record(src, d, entry.gpus, entry.decode_gpus)) for src, d, _ in kept]
        elif formats == {"inferencex"}:
            for src, d, _ in kept:
                kind = gpu_kind(str(d.get("hw") or ""), kinds)
                if kind is None:
                    raise ReplayError(f"{src}: hw {d.get('hw')!r} is no GPU kind of the matrices "
                                      f"({', '.join(kinds)})")
                engine = str(d.get("framework") or "").lower()
                here = kind == gpu and engine in engines  # other runs' fields need no optimization here
                if here:
                    _check_name(path.name, d)
                stack = Stack(kind, engine, opts_of(d, src, optimizations) if here else (), variant_of(d))
                placed.append((stack, _Record(src, d)))
        else:
            what = f"add {MANIFEST} to it" if entries is None else f"add an entry for it to its {MANIFEST}"
            raise ReplayError(
                f"{path.parent}: raw benchmark results (e.g. {path.name}) record neither their GPU count nor their "
                f"stack: {what}, e.g. `- {{files: '*.json', stack: fp4+mtp, gpus: 8}}` (optional: engine, gpu, "
                "decode_gpus, variant)")
        for stack, rec in placed:
            if stack.gpu != gpu or stack.engine not in engines:
                elsewhere[f"{stack.gpu}/{stack.engine}"] += 1
            else:
                groups.setdefault(stack, []).append(rec)
    if not groups:
        found = ", ".join(f"{k} ({n} results)" for k, n in sorted(elsewhere.items())) or "none"
        listed = f"; skipped {len(skipped)}:\n" + "\n".join(skipped) if skipped else ""
        raise ReplayError(f"--results {root}: no results for {gpu} with {', '.join(engines)}; found: {found}{listed}")
    return groups, skipped


def _lengths(data: dict[str, Any]) -> tuple[float, float] | None:
    """Input and output tokens per request as the file states them (agentic traces vary per request)."""
    if data.get("isl") and data.get("osl"):
        return float(data["isl"]), float(data["osl"])
    if data.get("mean_input_tokens") and data.get("mean_output_tokens_actual"):
        return float(data["mean_input_tokens"]), float(data["mean_output_tokens_actual"])
    if data.get("completed") and data.get("total_input_tokens"):
        n = float(data["completed"])
        return float(data["total_input_tokens"]) / n, float(data.get("total_output_tokens") or n) / n
    return None


def _date_of(data: dict[str, Any]) -> str:
    """The day a result was measured, when the file says: vLLM's `date` (20260428-094713) or an ISO date."""
    raw = str(data.get("date") or data.get("timestamp") or "")
    if hit := re.match(r"^(\d{4})(\d{2})(\d{2})-", raw):
        return "-".join(hit.groups())
    hit = re.match(r"^\d{4}-\d{2}-\d{2}", raw)
    return hit.group(0) if hit else ""


def measurement(stack: Stack, records: list[_Record], matrix: Matrix) -> Measurement:
    """One stack's group: levels by concurrency, repeats for files of the same concurrency. A file that
    measured nothing fails the whole group with its reason (never a zero-throughput point)."""
    got: list[Ingested] = []
    errors: list[str] = []
    for rec in sorted(records, key=lambda r: r.source):
        try:
            got.append(ingest_record(rec.source, rec.data, rec.gpus, rec.decode_gpus))
        except ResultError as exc:
            errors.append(str(exc))
    if errors:  # input the replay cannot read is a usage error, never a stack's verdict
        raise ReplayError("\n".join(errors))
    levels: list[Level] = []
    seen: Counter[int] = Counter()
    for r in sorted(got, key=lambda r: (r.concurrency, r.level.source)):
        levels.append(r.level.model_copy(update={"repeat": seen[r.concurrency]}))
        seen[r.concurrency] += 1
    levels.sort(key=lambda lv: (lv.concurrency, lv.repeat))
    warnings = [w for r in got for w in r.warnings]
    counts = sorted({(r.gpus, r.decode_gpus) for r in got})
    if len(counts) > 1:
        warnings.append(f"GPU count varies across files {counts}: each level is normalised by its own")
    first = records[0]
    gpus = counts[0][0] if counts else first.gpus or int(first.data.get("tp") or 0)
    decode_gpus = counts[0][1] if counts else first.decode_gpus or gpus
    lengths = next((x for x in map(_lengths, (r.data for r in records)) if x), None)
    workload = matrix.workload(stack.gpu).model_copy(update={
        "concurrency": sorted(seen), "repeats": max(seen.values(), default=1),
        **({"input_len": max(1, round(lengths[0])), "output_len": max(1, round(lengths[1]))} if lengths else {})})
    image = str(first.data.get("image") or "")
    version = re.search(r":v?(\d[\w.+-]*)$", image)
    blob = json.dumps([[r.source, r.data, r.gpus, r.decode_gpus] for r in records], sort_keys=True)
    return Measurement(
        key=hashlib.sha256(blob.encode()).hexdigest()[:12], stack=stack.id, engine=stack.engine,
        engine_version=version.group(1) if version else "unknown", gpu=stack.gpu,
        model=str(first.data.get("model") or first.data.get("model_id") or ""), gpus=gpus, decode_gpus=decode_gpus,
        workload=workload, argv={}, levels=levels, status="ok", warnings=warnings,
        date=", ".join(sorted({d for d in map(_date_of, (r.data for r in records)) if d})))


def replay_store(root: Path, matrix: Matrix, gpu: str, engines: list[str], store_root: Path) -> list[Stack]:
    """Classify `root`, write one Measurement per stack into `store_root` (dropping stale ones) and return
    the stacks present, in the order of the space (engine, size, matrix order), then by variant."""
    groups, skipped = classify(root, matrix, gpu, engines, skip=store_root.parent)
    store = Store(store_root)
    store_root.mkdir(parents=True, exist_ok=True)
    # The reports' header lists them (report/markdown.replayed_data): a skipped file is said, never dropped.
    (store_root / SKIPPED).write_text("".join(f"{ln}\n" for ln in skipped))
    written = {store.save(measurement(stack, recs, matrix)) for stack, recs in groups.items()}
    for old in store_root.glob("*.json"):  # idempotent, so xdist workers doing it too agree
        if old not in written:
            old.unlink(missing_ok=True)
    order = {o: i for i, o in enumerate(matrix.optimizations)}
    return sorted(groups, key=lambda s: (engines.index(s.engine), len(s.opts), [order[o] for o in s.opts],
                                         s.variant))
