#!/usr/bin/env bash
# RLlib smoke test (not part of CI: torch from the registry is gigabytes):
# a virtual environment with the reference's pinned Ray/torch set, the
# package built into it, and 2 PPO iterations on the Rust environment —
# one with local sampling, one with 2 parallel env runners.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/rllib-venv
if [ ! -x "$venv/bin/python" ]; then
  "${DFAAS_PYTHON:-python3}" -m venv "$venv"
fi
# maturin's build hook runs the `maturin` the venv installs.
export PATH="$PWD/$venv/bin:$PATH"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "ray[rllib]==2.40.0" "torch==2.7.1" "gymnasium==1.0.0" "numpy==2.1.3" \
  "pettingzoo==1.24.3" "maturin==1.16.0"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation ./dfaas-py
"$venv/bin/python" dfaas-py/examples/rllib_ppo.py --iterations 2
"$venv/bin/python" dfaas-py/examples/rllib_ppo.py --iterations 2 --num-env-runners 2
