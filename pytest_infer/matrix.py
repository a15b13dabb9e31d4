"""Typed view of matrices/*.yaml: GPU kinds, optimizations, models, engines, known-broken stacks.

Every file is validated by a pydantic model; a bad file raises `MatrixError` with one line naming the
file and the key, which the plugin turns into a usage error.
"""

from __future__ import annotations

import fnmatch
import math
import string
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from pytest_infer.analysis.stats import two_sided_z
from pytest_infer.engines import registry
from pytest_infer.space import Stack, matches
from pytest_infer.yamlfile import parse_model

Vendor = Literal["amd", "nvidia", "cpu"]


class MatrixError(Exception):
    """A matrices/ file is missing, not YAML, or does not fit its schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuKind(_Strict):
    vendor: Vendor
    arch: str
    memory_gb: float | None = Field(description="memory per device; None for host memory")
    gpus_per_node: int = Field(ge=1)
    scale_up_domain: int = Field(ge=1)
    fp4: bool
    # FP8 in hardware; without it (MI250X, gfx90a) the reference every stack is judged against is bf16.
    fp8: bool = True
    # Devices a deployment leases beyond its ranks (launch/leases.py): on cpu one core for the HTTP front
    # end and the load client, which otherwise starve beside another deployment's engine.
    host_devices: int = Field(0, ge=0)


    @property
    def reference_precision(self) -> str:
        return "fp8" if self.fp8 else "bf16"


class GpusFile(_Strict):
    gpus: dict[str, GpuKind]


class Optimization(_Strict):
    summary: str
    precision: str | None = None  # switches the checkpoint (fp4) instead of adding flags only
    requires: list[str] = []  # GPU capabilities (fields of GpuKind that must be true)
    # Conformance: the accuracy a stack with this optimization may lose against its reference
    # (non-inferiority margin), and for optimizations that should not change answers, the share of greedy
    # outputs that must equal the reference's (None: lossy, compared on accuracy only).
    accuracy_margin: float = Field(default=0.02, ge=0, lt=1)
    output_agreement: float | None = Field(default=None, gt=0, le=1)


class OptimizationsFile(_Strict):
    optimizations: dict[str, Optimization]

    @model_validator(mode="after")
    def _names(self) -> OptimizationsFile:
        for name in self.optimizations:
            if not name.replace("-", "").replace("_", "").isalnum() or name == "base":
                raise ValueError(f"optimization name {name!r} must be alphanumeric (and not 'base')")
        return self


class AccuracySpec(BaseModel):
    """How a model's accuracy is measured (models.yaml `accuracy:`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str = Field(description="an lm-eval task: one a model builder writes (the tiny model's arith), "
                                  "gsm8k_infx, or any of lm-eval's own")
    api: Literal["completions", "chat"] = "chat"  # lm-eval local-completions or local-chat-completions
    num_fewshot: int = Field(0, ge=0)
    samples: int | None = Field(None, ge=1,
                                description="documents to score (lm-eval --limit); a builder's own task: its size")
    max_tokens: int = Field(4096, ge=1)
    concurrency: int = Field(32, ge=1, description="requests in flight (lm-eval num_concurrent)")
    parity_prompts: int = Field(64, ge=1, description="greedy prompts compared with the reference")
    parity_max_tokens: int = Field(32, ge=1)
    # A module that writes the task locally (pytest_infer.builder.TaskWriter); default: the model's builder.
    writer: str | None = None


class Model(_Strict):
    checkpoints: dict[str, dict[str, str]]  # precision -> vendor (or "default") -> checkpoint
    builder: str | None = None  # a module that builds the model locally (pytest_infer.builder.ModelBuilder)
    accuracy_floor: dict[str, float] = {}  # task (or its family: gsm8k for gsm8k_infx) -> minimum score
    accuracy: AccuracySpec | None = None  # how lm-eval scores it (default: GSM8K 5-shot as InferenceX runs it)

    def floor(self, task: str) -> float | None:
        got = self.accuracy_floor.get(task)
        return got if got is not None else self.accuracy_floor.get(task.split("_")[0])

    def checkpoint(self, precision: str, vendor: str) -> str | None:
        by_vendor = self.checkpoints.get(precision, {})
        return by_vendor.get(vendor, by_vendor.get("default"))


class GpuDefaults(_Strict):
    model: str
    tensor_parallel: int = Field(ge=1)


class ModelsFile(_Strict):
    models: dict[str, Model]
    defaults: dict[str, GpuDefaults]
    default_accuracy_floor: dict[str, float] = {}  # task family -> floor for models without their own


class Fragment(_Strict):
    """Flags and environment an engine adds for one optimization (or for every server)."""

    args: list[str] = []
    env: dict[str, str] = {}
    params: dict[str, str] = {}  # values for ${placeholders}, overridable per vendor / GPU / role
    server: Fragment | None = None  # extra, for a monolithic server only
    prefill: Fragment | None = None  # extra, prefill servers only
    decode: Fragment | None = None  # extra, decode servers only
    by_vendor: dict[str, Fragment] = {}
    by_gpu: dict[str, Fragment] = {}

    def resolve(self, vendor: str, gpu: str, role: str) -> list[Fragment]:
        """The pieces that apply, most general first: self, vendor, GPU, then the role's part of each."""
        out: list[Fragment] = [self]
        for sub in (self.by_vendor.get(vendor), self.by_gpu.get(gpu)):
            if sub is not None:
                out.extend(sub.resolve(vendor, gpu, role))
        role_part = getattr(self, role, None) if role in ("server", "prefill", "decode") else None
        if role_part is not None:
            out.extend(role_part.resolve(vendor, gpu, role))
        return out


class Layout(_Strict):
    """What an optimization changes in the shape of a deployment (beyond flags)."""

    disaggregate: bool = False  # prefill + decode servers behind a router
    data_parallel: bool = False  # ranks as data parallel replicas (expert parallel MoE) instead of TP
    nodes: dict[str, int] = {}  # GPU kind -> nodes per server when this optimization is on


# A condition on a value an engine reports about itself: "*" (set: not None, False or empty), ">N" (a number
# above N), or globs with "|" between alternatives ("*fp4*|quark").
Condition = Annotated[str, StringConstraints(pattern=r"^(\*|>-?[0-9]+(\.[0-9]+)?|[^>|][^|]*(\|[^|]+)*)$")]


class EvidenceSpec(_Strict):
    """What a deployment running an optimization reports about itself (measure/evidence.py): what every
    serving role logs and exports with it, and -- the same conditions -- what a stack without it must not."""

    args: dict[str, Condition] = {}  # key of the non-default arguments line -> condition, on every serving role
    config: dict[str, Condition] = {}  # key of the resolved engine config line -> condition, on every serving role
    counters: list[str] = []  # /metrics samples that must have counted (> 0) on some role after traffic
    ranks: Condition | None = None  # engine ranks each serving role exports on /metrics (rank_label)
    by_vendor: dict[str, EvidenceSpec] = {}

    def resolve(self, vendor: str) -> EvidenceSpec:
        """The vendor's conditions over the general ones (same keys: the vendor's win)."""
        sub = self.by_vendor.get(vendor)
        if sub is None:
            return self.model_copy(update={"by_vendor": {}})
        sub = sub.resolve(vendor)
        return EvidenceSpec(args={**self.args, **sub.args}, config={**self.config, **sub.config},
                            counters=list(dict.fromkeys([*self.counters, *sub.counters])),
                            ranks=sub.ranks if sub.ranks is not None else self.ranks)


class EngineEvidence(_Strict):
    """Where an engine says what it runs, and what each optimization makes it say (measure/evidence.py).
    The markers: of its start-up log line of non-default arguments (a Python dict follows), of its resolved
    config line (key=value, ... follows); the /metrics label that numbers its engine ranks (data parallel).
    Apart from the optimizations' flags: a flag the launch drops must not take its evidence with it."""

    args_line: str = ""
    args_name: str = "non-default args"  # what the args line is called in a contradiction
    config_line: str = ""
    rank_label: str = ""
    optimizations: dict[str, EvidenceSpec] = {}

    @model_validator(mode="after")
    def _readable(self) -> EngineEvidence:
        for name, spec in self.optimizations.items():
            for where, need in (("args", "args_line"), ("config", "config_line"), ("ranks", "rank_label")):
                if any(getattr(s, where) for s in (spec, *spec.by_vendor.values())) and not getattr(self, need):
                    raise ValueError(f"evidence.optimizations.{name}.{where} needs evidence.{need}")
        return self


class EngineOptimization(Fragment):
    layout: Layout = Layout()


class GpuSupport(_Strict):
    unsupported: dict[str, str] = {}  # optimization -> why the engine cannot run it on this GPU


class RouterSpec(_Strict):
    argv: list[str]  # the adapter appends --prefill URL / --decode URL per server
    by_vendor: dict[str, list[str]] = {}
    health_path: str = "/health"


class EngineFile(_Strict):
    name: str
    package: list[str]  # distribution names to read the installed version from, first found wins
    serve: list[str]  # argv prefix that starts one server
    router: RouterSpec
    health_path: str = "/health"
    common: Fragment = Fragment()
    precisions: dict[str, Fragment] = {}
    optimizations: dict[str, EngineOptimization] = {}
    gpus: dict[str, GpuSupport]
    evidence: EngineEvidence = EngineEvidence()  # how a deployment's optimizations are read back
    # The engine's container image per GPU kind or vendor (a kind's entry wins): on Slurm each role's step
    # runs in it (pyxis --container-image, as InferenceX's launchers do); none: the engine on the nodes' PATH.
    images: dict[str, str] = {}

    def image_for(self, gpu: str, vendor: str) -> str | None:
        return self.images.get(gpu, self.images.get(vendor))


class KnownBroken(_Strict):
    stack: str  # a stack expression, as for --stack: "wideep", "disagg and mtp", "fp4+disagg"
    engine: str
    gpus: list[str]  # GPU kind globs
    versions: str = ""  # PEP 440 specifier of the engine version; empty: every version
    issue: str  # upstream issue or source URL
    failure: str  # what goes wrong, verbatim where possible
    kind: Literal["launch", "runtime", "silent accuracy", "silent performance"]


class KnownBrokenFile(_Strict):
    known_broken: list[KnownBroken]


class Thresholds(_Strict):
    composability_tolerance: float = Field(default=0.05, ge=0, lt=1)
    # Two-sided confidence of the interval on a throughput ratio (a verdict needs the whole interval
    # on one side of the margin).
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    # Samples per side from which the interval is bootstrapped instead of a log-space t interval.
    bootstrap_from: int = Field(default=10, ge=3)
    # A stack with MTP whose acceptance rate falls below this share of MTP alone's is flagged.
    mtp_acceptance_collapse: float = Field(default=0.5, gt=0, le=1)
    # Regression suite: how much slower (per-GPU throughput, matched interactivity) a run may be than its
    # baseline; a GPU kind's workload tolerance (its calibrated noise floor) overrides it.
    regression_tolerance: float = Field(default=0.03, ge=0, lt=1)
    # Regression suite: the stacks (labels) it covers by default per GPU kind; --stack picks others.
    # Absent: every stack.
    regression_stacks: dict[str, list[str]] = {}


class Workload(_Strict):
    input_len: int = Field(ge=1)
    output_len: int = Field(ge=1)
    range_ratio: float = Field(0.0, ge=0, le=1)
    concurrency: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    prompts_per_concurrency: int = Field(10, ge=1)
    min_prompts: int = Field(8, ge=1)
    warmups: int = Field(2, ge=0)
    seed: int = 0
    repeats: int = Field(3, ge=1, description="sweeps per deployment; each ratio's interval needs >= 2")
    # client: 1000 / median TPOT seen by the benchmark client (the field's convention). server: 1000 /
    # mean TPOT stamped by the engine core (scraped), for hosts where client and HTTP front end share
    # a starved core and receive tokens in bursts.
    interactivity_from: Literal["client", "server"] = "client"
    # Sampling temperature of the benchmark's requests; None keeps the engine's default (the field's way).
    temperature: float | None = Field(None, ge=0)
    # Per GPU kind, from an A/A calibration: the margin a stack may fall behind its best part (overrides
    # thresholds.composability_tolerance) and the between-session log-SD added to every interval.
    tolerance: float | None = Field(None, ge=0, lt=1)
    session_noise: float = Field(0.0, ge=0)
    # The regression suite's margin for this GPU kind (else `tolerance`, else thresholds'): a baseline is
    # always from another session, so its interval carries session_noise, and the margin must lie beyond
    # that noise's own bound or no run could pass (checked when the matrices load).
    regression_tolerance: float | None = Field(None, ge=0, lt=1)
    # Measure the deployments of a run together: all up at once, one level of each in turn, so a stack
    # and its parts see the same machine, level by level, and their ratios are taken pairwise per repeat
    # (analysis/stats.paired_ratio_interval). For hosts whose speed drifts (a shared VM); the devices
    # must be shareable by idle deployments (cpu cores are, GPU memory is not).
    interleave: bool = False

    def load_identity(self) -> dict[str, Any]:
        """What makes one sweep comparable with another: not how many are taken (more repeats resume the
        stored ones and may differ from a baseline's) nor the margins they are judged with."""
        return self.model_dump(exclude={"repeats", "tolerance", "session_noise", "regression_tolerance"})


class PricesFile(_Strict):
    """prices.yaml: per GPU kind, a price per device-hour in each tier the user names."""

    currency: str = "USD"
    prices: dict[str, dict[str, Annotated[float, Field(gt=0)]]] = {}


class WorkloadsFile(_Strict):
    thresholds: Thresholds = Thresholds()
    workloads: dict[str, Workload]  # GPU kind (or "default") -> workload


_M = TypeVar("_M", bound=BaseModel)


def _load(path: Path, schema: type[_M]) -> _M:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MatrixError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MatrixError(f"{path}: not a file (a directory)") from None
    except UnicodeDecodeError as exc:
        raise MatrixError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise MatrixError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_model(path, text, schema, MatrixError)


class Matrix:
    """All of matrices/, cross-checked so that a name used in one file exists in the other."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.gpus = _load(root / "gpus.yaml", GpusFile).gpus
        self.optimizations = _load(root / "optimizations.yaml", OptimizationsFile).optimizations
        models = _load(root / "models.yaml", ModelsFile)
        self.models, self.model_defaults = models.models, models.defaults
        self.default_floor = models.default_accuracy_floor
        workloads = _load(root / "workloads.yaml", WorkloadsFile)
        self.thresholds, self.workloads = workloads.thresholds, workloads.workloads
        self.known_broken = _load(root / "known_broken.yaml", KnownBrokenFile).known_broken
        # Optional: a matrices directory of one's own need not price anything.
        self.prices = _load(root / "prices.yaml", PricesFile) if (root / "prices.yaml").exists() else PricesFile()
        self.engines: dict[str, EngineFile] = {}
        self.engine_files: dict[str, Path] = {}  # where each engine's YAML was read
        for path in sorted((root / "engines").glob("*.yaml")):
            engine = _load(path, EngineFile)
            self.engines[engine.name], self.engine_files[engine.name] = engine, path
        try:  # a plug-in's YAML beside its adapter, unless this directory has the engine's own file
            shipped = registry.shipped_files()
        except registry.EngineError as exc:
            raise MatrixError(str(exc)) from None
        for name, path in sorted(shipped.items()):
            if name not in self.engines:
                engine = _load(path, EngineFile)
                if engine.name != name:
                    raise MatrixError(f"{path}: key name: {engine.name!r}, but the entry point names it {name!r}")
                self.engines[name], self.engine_files[name] = engine, path
        self.engines = dict(sorted(self.engines.items()))  # every report lists engines in name order
        if not self.engines:
            raise MatrixError(f"{root / 'engines'}: no engine files (engines/<name>.yaml, one per engine)")
        self._cross_check()

    def _cross_check(self) -> None:
        def need(ok: bool, file: str, key: str, msg: str) -> None:
            if not ok:
                raise MatrixError(f"{self.root / file}: key {key}: {msg}")

        for gpu, d in self.model_defaults.items():
            need(gpu in self.gpus, "models.yaml", f"defaults.{gpu}", "unknown GPU kind")
            need(d.model in self.models, "models.yaml", f"defaults.{gpu}.model", f"unknown model {d.model!r}")
        for gpu in self.prices.prices:
            need(gpu in self.gpus, "prices.yaml", f"prices.{gpu}", "unknown GPU kind")
        for gpu in self.gpus:
            need(gpu in self.model_defaults, "models.yaml", f"defaults.{gpu}", "missing (every GPU kind needs one)")
        for name, engine in self.engines.items():
            file = str(self.engine_files[name])
            for key, unknown in _unknown_placeholders(engine):
                need(False, file, key, f"unknown placeholder ${{{unknown}}} (known: {', '.join(sorted(PLACEHOLDERS))}"
                     f", and the params the file defines)")
            for gpu in engine.gpus:
                need(gpu in self.gpus, file, f"gpus.{gpu}", "unknown GPU kind")
                for opt in engine.gpus[gpu].unsupported:
                    need(opt in self.optimizations, file, f"gpus.{gpu}.unsupported.{opt}", "unknown optimization")
            for opt in engine.optimizations:
                need(opt in self.optimizations, file, f"optimizations.{opt}", "not in optimizations.yaml")
            for opt in self.optimizations:
                need(opt in engine.optimizations, file, f"optimizations.{opt}",
                     "missing: say how this engine runs it (or mark it unsupported per GPU)")
            for opt in engine.evidence.optimizations:
                need(opt in self.optimizations, file, f"evidence.optimizations.{opt}", "not in optimizations.yaml")
        for i, kb in enumerate(self.known_broken):
            where = f"known_broken.{i}"
            probe = Stack(next(iter(self.gpus)), kb.engine, tuple(self.optimizations))
            try:
                matches(probe, kb.stack, list(self.optimizations))
            except (ValueError, SyntaxError) as exc:
                need(False, "known_broken.yaml", f"{where}.stack", f"{kb.stack!r}: {exc}")
            try:
                SpecifierSet(kb.versions)
            except InvalidSpecifier:
                need(False, "known_broken.yaml", f"{where}.versions", f"{kb.versions!r} is not a PEP 440 specifier "
                     f"(e.g. '>=0.11,<0.12')")
            # A known engine without a YAML here (matrices that drop SGLang) keeps its entries, unused.
            need(kb.engine in self.engines or kb.engine in registry.registered(), "known_broken.yaml",
                 f"known_broken.{i}.engine", f"unknown engine {kb.engine!r}")
        # A run identical to its baseline reads as low as exp(-z * session_noise) at this confidence
        # however many repeats; a regression margin inside that could never pass.
        z = two_sided_z(self.thresholds.confidence)
        for gpu, w in self.workloads.items():
            floor, margin = math.exp(-z * w.session_noise), self.margins(gpu)[1]
            need(1 - margin < floor, "workloads.yaml", f"workloads.{gpu}.regression_tolerance",
                 f"a margin of {margin:.2f} is inside the between-session noise (session_noise {w.session_noise}:"
                 f" an unchanged run reads as low as {floor:.2f} at {self.thresholds.confidence:.0%}), so no "
                 f"baseline comparison could pass; set it above {1 - floor:.2f}")
        for opt, o in self.optimizations.items():
            for cap in o.requires:
                need(cap in GpuKind.model_fields, "optimizations.yaml", f"optimizations.{opt}.requires",
                     f"unknown capability {cap!r}")

    def engines_for(self, gpu: str) -> list[str]:
        return [name for name, e in self.engines.items() if gpu in e.gpus]

    def workload(self, gpu: str) -> Workload:
        return self.workloads.get(gpu) or self.workloads["default"]

    def margins(self, gpu: str) -> tuple[float, float]:
        """(composability, regression) tolerance for a GPU kind: its workload's, else the thresholds'."""
        t, w = self.thresholds, self.workload(gpu)
        comp = t.composability_tolerance if w.tolerance is None else w.tolerance
        reg = w.regression_tolerance if w.regression_tolerance is not None else (
            t.regression_tolerance if w.tolerance is None else w.tolerance)
        return comp, reg

    def unsupported_reason(self, engine: str, gpu: str, opts: tuple[str, ...]) -> str | None:
        kind = self.gpus[gpu]
        for opt in opts:
            for cap in self.optimizations[opt].requires:
                if not getattr(kind, cap):
                    return f"{gpu} has no {cap} support in hardware ({opt})"
            why = self.engines[engine].gpus[gpu].unsupported.get(opt)
            if why is not None:
                return f"{engine} on {gpu} cannot run {opt}: {why}"
        return None

    def known_broken_for(self, engine: str, gpu: str) -> list[KnownBroken]:
        return [kb for kb in self.known_broken
                if kb.engine == engine and any(fnmatch.fnmatchcase(gpu, g) for g in kb.gpus)]


# What engines/base.py fills in per role (the router's argv only gets host, port and side_port).
PLACEHOLDERS = frozenset({"model", "served_name", "host", "port", "side_port", "router_host", "router_port",
                          "run_dir", "max_model_len", "cpu_cores"})


def _unknown_placeholders(engine: EngineFile) -> list[tuple[str, str]]:
    """(key, placeholder) for every ${name} the engine file uses that nothing fills in (a typo such as
    ${served}): found when the matrices load, not when a deployment is built mid-run."""
    frags: list[tuple[str, Fragment]] = [("common", engine.common)]
    frags += [(f"precisions.{k}", f) for k, f in engine.precisions.items()]
    frags += [(f"optimizations.{k}", f) for k, f in engine.optimizations.items()]
    strings: list[tuple[str, str]] = [("serve", a) for a in engine.serve]
    params: set[str] = set()
    while frags:
        key, frag = frags.pop()
        params |= set(frag.params)
        strings += [(f"{key}.args", a) for a in frag.args] + [(f"{key}.env.{k}", v) for k, v in frag.env.items()]
        frags += [(f"{key}.{role}", sub) for role in ("server", "prefill", "decode")
                  if (sub := getattr(frag, role)) is not None]
        frags += [(f"{key}.by_vendor.{k}", f) for k, f in frag.by_vendor.items()]
        frags += [(f"{key}.by_gpu.{k}", f) for k, f in frag.by_gpu.items()]
    known = PLACEHOLDERS | params
    out = [(key, name) for key, text in strings for name in string.Template(text).get_identifiers()
           if name not in known]
    router = [*engine.router.argv, *(a for argv in engine.router.by_vendor.values() for a in argv)]
    out += [("router.argv", name) for text in router for name in string.Template(text).get_identifiers()
            if name not in ("host", "port", "side_port")]
    return sorted(set(out))


def default_root() -> Path:
    """matrices/ of a checkout, or the copy packaged inside the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "matrices", here.parent / "matrices"):
        if candidate.is_dir():
            return candidate
    raise MatrixError(f"no matrices/ directory next to {here}")
