#!/usr/bin/env bash
# One entry point for the two set-up commands in README.md:
#   bash run.sh app    install, then start the dashboard (offline default model)
#   bash run.sh test   install, then run the test suite
set -euo pipefail
cd "$(dirname "$0")"

install_system() {  # espeak-ng synthesises test speech; chromium drives the browser tests; PortAudio: the microphone
  local want=(espeak-ng libsndfile1 libportaudio2 libb64-0d)   # libb64: perf_analyzer (install_perf_analyzer)
  [ "$1" = test ] && want+=(chromium chromium-driver fonts-lohit-deva)  # Devanagari in the screenshots
  # the microphone tests' virtual device: a PulseAudio null sink, reached by PortAudio through ALSA's pulse plugin
  [ "$1" = test ] && want+=(pulseaudio pulseaudio-utils libasound2-plugins)
  local missing=()
  for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python() {
  python3 -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
  python3 -c "import torch, onnxruntime, streamlit, pytriton" # fail here, not mid-test, if the install broke
}

install_perf_analyzer() {  # Triton's C++ load generator for the sweep (--load-generator perf_analyzer): tritonclient
  # 2.51.0's manylinux wheel is the last to carry the binary; it links CUDA 12's runtime (no GPU needed to run it)
  [ -x .tools/perf_analyzer/bin/perf_analyzer ] && return
  mkdir -p .tools && rm -rf .tools/perf_analyzer.tmp
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target .tools/perf_analyzer.tmp \
    tritonclient==2.51.0 nvidia-cuda-runtime-cu12==12.9.79 2>&1 | grep -v "^WARNING: Location" || true
  rm -rf .tools/perf_analyzer && mv .tools/perf_analyzer.tmp .tools/perf_analyzer   # whole, or not there
}

case "${1:-}" in
  app)
    install_system app; install_python; install_perf_analyzer
    # the bind address is .streamlit/config.toml's (127.0.0.1: no login); WORKBENCH_ADDRESS=0.0.0.0 opens it on purpose
    exec python3 -m streamlit run app.py --server.headless true ${WORKBENCH_ADDRESS:+--server.address "$WORKBENCH_ADDRESS"} "${@:2}" ;;
  test)
    install_system test; install_python; install_perf_analyzer
    exec python3 -m pytest -q "${@:2}" ;;
  *) echo "usage: bash run.sh app|test" >&2; exit 2 ;;
esac
