#!/usr/bin/env bash
# Run the device kit on a lent GPU machine (no network, no Ray): install the wheels that .kit carries
# (python bench/device_kit.py pack, here, first), then check, measure and train within the budget.
# Usage (device tool): run with carry [".kit"], command "bash bench/device_kit.sh", timeout_s 600.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .kit/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 bench/device_kit.py run --out "${OUT:-results/device_kit}" --budget "${KIT_BUDGET:-510}" "$@"
