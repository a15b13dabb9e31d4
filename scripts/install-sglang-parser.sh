#!/usr/bin/env bash
# Build a side virtualenv holding SGLang's OWN server-argument parser (and
# sglang-router's), so generated `python -m sglang.launch_server` and
# `python -m sglang_router.launch_router` command lines can be checked on a
# machine without a GPU. SGLang never serves from this env.
#
#   scripts/install-sglang-parser.sh [ENV_DIR]      # default: <repo>/.sglang-env
#   echo '[["--model-path","X","--tp","8"]]' | ENV_DIR/bin/python scripts/sglang_parse.py
#
# Why each piece is there (sglang 0.5.23):
#   - sglang is installed with --no-deps: its own requirements pin CUDA torch
#     2.14.1, flashinfer, deep-ep, ... (many GB, none needed to parse flags).
#   - `import sglang.srt.server_args` imports sglang.srt.utils.common, which does
#     a top-level `import torch` and `import triton`; so both are truly needed.
#     torch is the 2.13.0 CPU build (a local wheel on these machines; pip's
#     configured find-links picks it). triton has no CPU/CUDA split; its GPU-only
#     binaries (ptxas, cupti, AMD codegen, proton), about 490 MB, are removed
#     after install: importing triton and parsing do not touch them.
#   - the rest are the pure-Python (or small wheel) modules that the import chain
#     reaches: found by importing until nothing was missing.
#   - ServerArgs.__post_init__ does nothing in 0.5.23 (hardware/model checks run
#     later in resolve_once()), so ServerArgs.from_cli_args() is safe on CPU.
#
# Environment knobs: PYTHON (interpreter, must be 3.11: the sglang wheel is
# cp311), FORCE=1 (rebuild even if the stamp matches), NO_TRIM=1 (keep triton whole).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${1:-$REPO_ROOT/.sglang-env}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

SGLANG_VERSION="0.5.23"
SGLANG_ROUTER_VERSION="0.3.2"
TORCH_VERSION="2.13.0"     # CPU build; any other version pulls CUDA wheels
TRITON_VERSION="3.9.0"
# Direct imports of the server_args import chain (transitive deps left to pip).
DEPS=(
    "numpy==2.4.6" "msgspec==0.23.0" "orjson==3.13.0" "psutil==7.2.2"
    "pybase64==1.5.1" "requests==2.34.2" "packaging==26.4" "pillow==13.0.0"
    "starlette==1.10.0" "pydantic==2.14.4" "pyzmq==27.3.0" "tqdm==4.70.1"
    "ipython==9.18.1" "aiohttp==3.14.5"
)
STAMP_TEXT="sglang==$SGLANG_VERSION sglang-router==$SGLANG_ROUTER_VERSION torch==$TORCH_VERSION triton==$TRITON_VERSION"
STAMP="$ENV_DIR/.sglang-parser-stamp"

log() { printf '[install-sglang-parser] %s\n' "$*" >&2; }

if [[ "${FORCE:-0}" != "1" && -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_TEXT" ]] \
    && "$ENV_DIR/bin/python" -c "import sglang.srt.server_args, sglang_router.router_args" 2>/dev/null; then
    log "already built: $ENV_DIR ($STAMP_TEXT)"
    exit 0
fi

pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "$pyver" != "3.11" ]]; then
    log "need Python 3.11 (sglang $SGLANG_VERSION ships a cp311 wheel); $PYTHON is $pyver"
    exit 1
fi

start=$(date +%s)
rm -rf "$ENV_DIR"
"$PYTHON" -m venv "$ENV_DIR"
# Keep the env out of git without touching the repository's .gitignore.
printf '*\n' > "$ENV_DIR/.gitignore"
PIP=("$ENV_DIR/bin/python" -m pip --disable-pip-version-check -q)

log "installing torch $TORCH_VERSION (CPU), triton $TRITON_VERSION, sglang-router $SGLANG_ROUTER_VERSION and import deps"
"${PIP[@]}" install "torch==$TORCH_VERSION" "triton==$TRITON_VERSION" \
    "sglang-router==$SGLANG_ROUTER_VERSION" "${DEPS[@]}"
torch_ver="$("$ENV_DIR/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')"
if [[ "$torch_ver" != *+cpu ]]; then
    log "WARNING: got torch $torch_ver, not the CPU build; the env may be much larger than needed"
fi

log "installing sglang $SGLANG_VERSION --no-deps"
"${PIP[@]}" install --no-deps "sglang==$SGLANG_VERSION"

if [[ "${NO_TRIM:-0}" != "1" ]]; then
    triton_dir="$("$ENV_DIR/bin/python" -c 'import importlib.util as u, os; print(os.path.dirname(u.find_spec("triton").origin))')"
    rm -rf "$triton_dir/backends/nvidia/bin" \
           "$triton_dir/backends/nvidia/lib/cupti" \
           "$triton_dir/backends/nvidia/lib/cupti-blackwell" \
           "$triton_dir/backends/amd/lib/libtriton_amd_codegen.so" \
           "$triton_dir/_C/libproton.so"
fi

log "checking the parsers"
probe='[["--model-path","X","--tp","8","--ep-size","8","--moe-a2a-backend","deepep"],["--model-path","X","--moe-a2a-backend","nonsense"]]'
out="$(printf '%s' "$probe" | "$ENV_DIR/bin/python" "$REPO_ROOT/scripts/sglang_parse.py" || true)"
if ! printf '%s' "$out" | "$ENV_DIR/bin/python" -c '
import json, sys
r = json.load(sys.stdin)
sys.exit(0 if r[0]["ok"] and not r[1]["ok"] and "invalid choice" in r[1]["error"] else 1)'; then
    log "parser self-check failed:"; printf '%s\n' "$out" >&2
    exit 1
fi
printf '[["--pd-disaggregation","--prefill","http://127.0.0.1:8021","9000","--decode","http://127.0.0.1:8022"]]' \
    | "$ENV_DIR/bin/python" "$REPO_ROOT/scripts/sglang_parse.py" --router >/dev/null

printf '%s' "$STAMP_TEXT" > "$STAMP"
log "built $ENV_DIR in $(( $(date +%s) - start )) s, size $(du -sh "$ENV_DIR" | cut -f1)"
