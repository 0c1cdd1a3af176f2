#!/usr/bin/env bash
# Prepare a bare GPU box (no network, no espeak-ng) for `python -m core.demo.train`.
# Unpacks the Debian packages shipped in .gpuship/deb into $ROOT (never into /) and writes a
# wrapper $ROOT/espeak-ng that runs the unpacked binary with its own libraries and voice data;
# installs the wheels in .gpuship/whl into /tmp/site. Source it:  . core/demo/gpu_setup.sh
ROOT=${ESPEAK_ROOT:-/tmp/espeak}
SHIP=${GPUSHIP:-.gpuship}
mkdir -p "$ROOT"
for f in "$SHIP"/deb/*.deb; do dpkg -x "$f" "$ROOT"; done
LIBS="$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu:$ROOT/usr/lib/x86_64-linux-gnu/pulseaudio"
cat > "$ROOT/espeak-ng" <<WRAP
#!/bin/sh
export LD_LIBRARY_PATH="$LIBS"
export ESPEAK_DATA_PATH="$ROOT/usr/lib/x86_64-linux-gnu"
exec "$ROOT/usr/bin/espeak-ng" "\$@"
WRAP
chmod +x "$ROOT/espeak-ng"
export ESPEAK_NG="$ROOT/espeak-ng"
if ls "$SHIP"/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$SHIP"/whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$ESPEAK_NG" --version
