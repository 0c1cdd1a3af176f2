#!/usr/bin/env bash
# perf_analyzer for the GPU machine, which has no network and no libb64:
#   here:  bash bench/device_perf_analyzer.sh pack     (after `bash run.sh test`: .tools/perf_analyzer, libb64-0d)
#          writes .pa/ (ignored through .git/info/exclude): the binary stripped and xz'd, libb64, CUDA 12's runtime
#   there: carry [".pa"], bash bench/device_perf_analyzer.sh unpack && source /tmp/pa/env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  pack)
    grep -qx '/.pa/' .git/info/exclude 2>/dev/null || echo '/.pa/' >> .git/info/exclude
    rm -rf .pa && mkdir -p .pa
    strip -o .pa/perf_analyzer .tools/perf_analyzer/bin/perf_analyzer && xz -9 .pa/perf_analyzer
    cp -L .tools/perf_analyzer/nvidia/cuda_runtime/lib/libcudart.so.12 /usr/lib/x86_64-linux-gnu/libb64.so.0d .pa/
    du -sh .pa ;;
  unpack)
    mkdir -p /tmp/pa && xz -dc .pa/perf_analyzer.xz > /tmp/pa/perf_analyzer && chmod +x /tmp/pa/perf_analyzer
    cp .pa/lib*.so* /tmp/pa/
    echo "export WORKBENCH_PERF_ANALYZER=/tmp/pa/perf_analyzer" > /tmp/pa/env.sh
    LD_LIBRARY_PATH=/tmp/pa /tmp/pa/perf_analyzer --version ;;
  *) echo "usage: bash bench/device_perf_analyzer.sh pack|unpack" >&2; exit 2 ;;
esac
