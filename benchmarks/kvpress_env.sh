#!/usr/bin/env bash
# Builds .venv-kvpress/: kvcheck next to kvpress, whose releases pin transformers < 5.3, and
# optimum-quanto (the hf_quantized adapter's quanto backend), without touching the main install. torch
# comes from the system site-packages. CI builds it and runs the adapter tests in it (.ci/run).
#
#   bash benchmarks/kvpress_env.sh
#   .venv-kvpress/bin/python -m pytest tests/test_adapters.py -q        # adapter tests against kvpress
#   nice -n 10 .venv-kvpress/bin/python benchmarks/crosscheck_kvpress.py
#
# The hqq backend of hf_quantized is optional: DISABLE_CUDA=1 .venv-kvpress/bin/pip install hqq
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KVPRESS_VENV:-.venv-kvpress}
python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q "transformers>=5.0,<5.3" "kvpress==0.5.5" "optimum-quanto==0.2.7"
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/python" -c "import kvpress, transformers, torch; print('kvpress ok; transformers', transformers.__version__, '| torch', torch.__version__)"
"$VENV/bin/python" -c "import optimum.quanto; print('optimum-quanto ok')"
