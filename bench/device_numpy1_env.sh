#!/usr/bin/env bash
# Device-only helper: the GPU machine's Python (torch venv) has NumPy 2, but PyTriton 0.7's Python-backend stub
# is built for NumPy 1 and returns empty outputs under NumPy 2. This builds /tmp/tv, a venv that sees the torch
# venv's packages through a .pth file but puts numpy<2 (and a SciPy built for it) first; its interpreter then
# runs the server and the stub. Usage: bash bench/device_numpy1_env.sh WHEEL... ; then /tmp/tv/bin/python ...
set -euo pipefail
base=$(python3 -c 'import site; print(site.getsitepackages()[0])')
[ -x /tmp/tv/bin/python ] || python3 -m venv --without-pip /tmp/tv
tv=$(/tmp/tv/bin/python -c 'import site; print(site.getsitepackages()[0])')
echo "$base" > "$tv/base_env.pth"
python3 -m pip install -q --no-deps --target "$tv" --upgrade "$@"
/tmp/tv/bin/python -c 'import numpy, torch; print("tv: numpy", numpy.__version__, "torch", torch.__version__)'
