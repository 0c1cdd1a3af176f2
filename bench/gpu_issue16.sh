#!/usr/bin/env bash
# Issue 16 on a GPU machine, one phase per device call (each under 10 minutes), from the repository root once the
# wheels are staged (`source /tmp/devwheels/env.sh`; the triton phase also needs /tmp/tv from device_numpy1_env.sh):
#   w1      W1/W2 of torch fp32 (TF32 off), the peer (HF FP16 + SDPA + torch.compile reduce-overhead) and fast fp16
#           in one run; demo-set WER of each fast variant (the peer alone takes ~220 s: its recompiles)
#   cold    cold start of fast fp16 (load + compile + capture of 8 graphs: 5/20 s x batch 1/8): empty compile cache,
#           then warm, each a fresh process
#   triton  Triton's Python backend on fast fp16 (the server's defaults: a batch bucket per size, one CPU thread per
#           instance), $INSTANCES instances (default 2), max batch $MAX_BATCH (16 or 32), preferred sizes $PREFERRED
#           (default 8: at concurrency 16 a preferred 16 hands all requests to one instance while the other idles;
#           twelfth session), $REPEATS levels (default 1; the median is compared) of $LEVEL_S seconds (default
#           10) at concurrency 16; with REPEATS=5 ~330 s a configuration with a warm compile cache, ~390 s from an
#           empty one (thirteenth session); CLIENTS=N:
#           N load-generator processes (default 8, two client threads each at concurrency 16; 16 gives each client
#           its own interpreter, so no answer waits on another's CTC decode and send under one GIL); PYTRITON=1 serves
#           through PyTriton instead: the instances are threads of one process, one CUDA context, so one
#           instance's host work overlaps the other's GPU work without time-slicing two contexts (seventeenth
#           session: 53 % against the Python backend's 84 % on the same machine, the one interpreter's GIL the limit);
#           INPUT_DTYPE=fp32|fp16 sets the served audio's type (default auto: FP16 for fast:fp16, the outputs bit for
#           bit the same, every copy of a request's audio half the bytes; nineteenth session, same lease, max batch
#           16: 79 % against fp32's 75 %; fp32 is what every run before the nineteenth session served);
#           DECOUPLED=1 was measured and removed: H200 76 % vs default 76 % (2026-12-04), H100 84 % vs 89 % (2026-12-07);
#           SERVER_CPUS=0-7 CLIENT_CPUS=8-15: the server and the load generator pinned to disjoint CPU sets (the
#           log's first lines list the hyper-thread siblings), to test whether the workbench client's alternating
#           slow levels come from where the OS places its processes (twenty-fourth session); PIN=halves picks
#           them: the first half of the physical cores for the server, the rest for the clients (bench/cpu_halves.py);
#           PA=1: after the workbench's levels, Triton's perf_analyzer drives
#           the same server at concurrency 16 (5 s windows; needs `source /tmp/pa/env.sh` from .pa/setup.sh)
# MPS=1 (any phase): the phase runs under an MPS control daemon of its own (pipe and log dirs under /tmp, quit when the
#           phase ends), so separate processes (Triton's Python-backend instances) share one GPU context instead of
#           time-slicing two; where nvidia-cuda-mps-control is missing the phase says so and runs nothing
#           (seventeenth session, triton at max batch 16: 65 % under MPS against 84 % without; not recommended)
#   scope   cold start with the fast module compiled by region (compile_scope="layer"), empty then warm cache, the
#           same 8 graphs as `cold`; then W1/W2 and the demo-set WER of both scopes in one run
#   precompile  cold start with torch.compile's ahead-of-time artifacts per shape (compile="precompile", weights
#           left out), empty then warm cache, the same 8 graphs as `cold`; then W1/W2 and the demo-set WER against
#           compile="default" in one run (needs torch.compile's aot_compile: torch 2.11, the GPU machine's on
#           2026-12-02, has none, and the backend refuses precompile there)
#   dyncold the default `check`, then the cold start with dynamic_batch (one compile per length bucket and mask
#           variant for batch 1, one for every batch from 2 up: 8 compiles for the 16 graphs of 5/20 s x batch
#           1/2/4/8), the model loaded from disk as a user's checkpoint is; empty then warm cache
#   dynw1   W1/W2 and demo WER of the static compile against dynamic_batch in one run; then the conformance matrix
#           with dynamic_batch (demo model)
#   dyntime the length dimension dynamic too (dynamic_time + dynamic_batch: four compiles for all
#           64 graphs): the conformance matrix with both, then W1/W2 and demo WER against the static compile
#   coldall cold start of every bucket (8 lengths x 4 batches x masked/mask-free = 64 graphs) with dynamic_time and
#           dynamic_batch, the model loaded from disk; empty then warm cache (issue 16, item 3: <= 30 s warm)
#   coldlayer  item 3 by region: the conformance matrix with compile_scope=$SCOPE (encoder, the default: layers and
#           head compiled, the front eager; or layer: the front compiled too) + dynamic batch and time, then the cold
#           start of every bucket that way, empty then warm cache (a warm cache's 38 s were 24 s of Dynamo tracing,
#           tenth session, most of it the front's on the CPU)
#   coldlayerw1  W1/W2 and demo WER of static, whole dynamic, encoder and layer dynamic compiles in one run
#           ($VARIANTS: another comma-separated list of bench/gpu_w1.py variants)
#   servecheck  the conformance matrix through Triton (Python backend, 2 instances, max batch 16) of the fast
#           backend's default options, demo model; INPUT_DTYPE=fp32 serves FP32 audio
#   graphmem  GPU memory of 32 CUDA graphs (batch 1..32 at 5 s, dynamic batch; Triton's per-instance warm-up at max
#           batch 32): one capture stream per backend since the ninth session (was a new stream per capture, ~38 GiB)
#   check   the conformance matrix of fast fp16 on the GPU, demo model (trained: transcripts gated; the same code
#           paths as wav2vec2-large, whose 32 cold compiles of ~18 s would not fit one call)
#   gemmlt  item 1: every cuBLASLt candidate (the heuristic's list, and split-K variants of each) for W1's four
#           linear-layer shapes at $ROWS rows (default 249), checked against F.linear and timed on 24 weights in one
#           CUDA graph; then the 96-GEMM chain with the fastest per shape against F.linear's (bench/gemm_lt.py)
#   sdpa    item 1: each SDPA backend (cuDNN, flash, memory-efficient) on the encoder's attention at 249 tokens,
#           batch 1 and 8: error against FP32 math, kernels and memsets launched, 24 calls in one CUDA graph
#           (bench/sdpa_backends.py)
#   aoti    does an AOTInductor package load on this GPU? (2026-12-02, torch 2.11.0+cu130: every form segfaulted at
#           load, so the fast backend refuses compile="aoti" on CUDA; rerun this on a new torch before lifting that)
# (2026-11-29, fourth session: a dynamic-shape compile of the fast module failed in Inductor on the H200 after ~4
# minutes — bench/results/2026-11-29-s4/cold_dynamic_failed.log — so the option and its check phase are gone.)
set -uo pipefail
phase=${1:?usage: gpu_issue16.sh w1|cold|triton|gemmlt|sdpa|aoti|scope|precompile|dyncold|dynw1|dyntime|coldall|coldlayer|coldlayerw1|servecheck|graphmem|check}
out=${OUT:-/tmp/out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 WORKBENCH_ARTIFACTS=${WORKBENCH_ARTIFACTS:-/tmp/wb}
# the served phases need the staged wheels: a machine that went back between calls comes back fresh, so say that at
# once instead of spending the call on imports that fail (twenty-fourth session)
case "$phase" in
  triton|servecheck)
    for need in /tmp/devwheels/env.sh /tmp/tv/bin/python ${PA:+/tmp/pa/env.sh}; do
      [ -e "$need" ] || { echo "$phase: $need is missing, so this machine is not staged (a fresh one?): stage again from .devwheels/p00" | tee "$out/staging-$phase.log"; exit 3; }
    done
    [ -z "${PA:-}" ] || [ -n "${WORKBENCH_PERF_ANALYZER:-}" ] || { echo "$phase: PA=1 needs \`source /tmp/pa/env.sh\` first" | tee "$out/staging-$phase.log"; exit 3; } ;;
esac
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv > "$out/nvidia-smi-$phase.csv"
if [ -n "${MPS:-}" ]; then   # one GPU context for the phase's processes (NOTES, sixteenth session)
  command -v nvidia-cuda-mps-control >/dev/null || { echo "MPS=1: nvidia-cuda-mps-control is not on this machine" | tee "$out/mps-$phase.log"; exit 1; }
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  nvidia-cuda-mps-control -d || exit 1
  trap 'echo quit | nvidia-cuda-mps-control; cp $CUDA_MPS_LOG_DIRECTORY/control.log "$out/mps-$phase-control.log" 2>/dev/null' EXIT
fi
case "$phase" in
  w1)
    python3 bench/gpu_w1.py --eval-demo --budget-s 420 --warmup 20 --repeats 100 \
      --variants torch:fp32:cuda,peer:fp16:compile,fast:fp16:compile+graphs \
      > "$out/w1.log" 2>&1; echo "w1 exit $?" | tee -a "$out/w1.log" ;;
  cold)
    python3 bench/gpu_coldstart.py --buckets-s 5 20 --batch-buckets 1 8 > "$out/cold_static8.log" 2>&1
    echo "cold exit $?" | tee -a "$out/cold_static8.log" ;;
  triton)
    mb=${MAX_BATCH:-16}; inst=${INSTANCES:-2}; how=--python-backend; pref=${PREFERRED:-8}
    sfx=_mb${mb}_i${inst}${PREFERRED:+_p${PREFERRED// /-}}${LEVEL_S:+_l$LEVEL_S}${REPEATS:+_r$REPEATS}${CLIENTS:+_c$CLIENTS}${INPUT_DTYPE:+_$INPUT_DTYPE}
    name=triton_pyb$sfx
    [ -n "${PYTRITON:-}" ] && how= && name=triton_pyt$sfx   # the instances as threads of one process
    [ -n "${MPS:-}" ] && name=${name}_mps
    if [ "${PIN:-}" = halves ]; then   # half the physical cores each (bench/cpu_halves.py)
      read -r SERVER_CPUS CLIENT_CPUS < <(python3 bench/cpu_halves.py)
      [ -n "${CLIENT_CPUS:-}" ] || { echo "PIN=halves needs at least two physical cores"; exit 2; }
    fi
    [ -n "${CLIENT_CPUS:-}${SERVER_CPUS:-}" ] && name=${name}_pinned
    timeout 540 /tmp/tv/bin/python bench/gpu_triton.py --backend fast:fp16:cuda --max-batch $mb --preferred $pref \
      --level-seconds ${LEVEL_S:-10} --level-repeats ${REPEATS:-1} --concurrency 16 --instances $inst --batches 8 $how \
      ${CLIENTS:+--client-processes $CLIENTS} ${INPUT_DTYPE:+--input-dtype $INPUT_DTYPE} \
      ${PA:+--perf-analyzer} ${SERVER_CPUS:+--server-cpus $SERVER_CPUS} ${CLIENT_CPUS:+--client-cpus $CLIENT_CPUS} \
      > "$out/$name.log" 2>&1
    echo "triton max batch $mb, $inst instances exit $?" | tee -a "$out/$name.log"; cp "$out/gpu_triton.json" "$out/$name.json" ;;
  scope)
    timeout 300 python3 bench/gpu_coldstart.py --compile-scope layer --buckets-s 5 20 --batch-buckets 1 8 > "$out/cold_layer.log" 2>&1
    echo "cold layer exit $?" | tee -a "$out/cold_layer.log"
    timeout 280 python3 bench/gpu_w1.py --eval-demo --budget-s 260 --warmup 20 --repeats 100 \
      --variants fast:fp16:compile+graphs,fast:fp16:layer-compile+graphs > "$out/w1_scope.log" 2>&1
    echo "w1 scope exit $?" | tee -a "$out/w1_scope.log" ;;
  precompile)
    timeout 300 python3 bench/gpu_coldstart.py --compile precompile --buckets-s 5 20 --batch-buckets 1 8 > "$out/cold_precompile.log" 2>&1
    echo "cold precompile exit $?" | tee -a "$out/cold_precompile.log"
    timeout 280 python3 bench/gpu_w1.py --eval-demo --budget-s 260 --warmup 20 --repeats 100 \
      --variants fast:fp16:compile+graphs,fast:fp16:precompile+graphs > "$out/w1_precompile.log" 2>&1
    echo "w1 precompile exit $?" | tee -a "$out/w1_precompile.log" ;;
  dyncold)
    timeout 170 python3 -m core check --model demo --backend fast:fp16:cuda > "$out/check_demo.log" 2>&1
    echo "check demo exit $?" | tee -a "$out/check_demo.log"
    timeout 400 python3 bench/gpu_coldstart.py --dynamic-batch --from-disk --buckets-s 5 20 \
      --batch-buckets 1 2 4 8 > "$out/cold_dyn16.log" 2>&1
    echo "cold dynamic batch exit $?" | tee -a "$out/cold_dyn16.log" ;;
  dynw1)
    timeout 300 python3 bench/gpu_w1.py --eval-demo --budget-s 280 --warmup 20 --repeats 100 --variants \
      fast:fp16:compile+graphs,fast:fp16:dynbatch-compile+graphs > "$out/w1_dyn.log" 2>&1
    echo "w1 dynamic batch exit $?" | tee -a "$out/w1_dyn.log"
    timeout 250 python3 -m core check --model demo --backend fast:fp16:cuda --option dynamic_batch=true \
      > "$out/check_demo_dyn.log" 2>&1
    echo "check demo dynamic batch exit $?" | tee -a "$out/check_demo_dyn.log" ;;
  dyntime)
    timeout 250 python3 -m core check --model demo --backend fast:fp16:cuda --option dynamic_batch=true \
      --option dynamic_time=true > "$out/check_demo_dyntime.log" 2>&1
    echo "check demo dynamic batch and time exit $?" | tee -a "$out/check_demo_dyntime.log"
    timeout 300 python3 bench/gpu_w1.py --eval-demo --budget-s 280 --warmup 20 --repeats 100 --variants \
      fast:fp16:compile+graphs,fast:fp16:dynamic-compile+graphs > "$out/w1_dyntime.log" 2>&1
    echo "w1 dynamic batch and time exit $?" | tee -a "$out/w1_dyntime.log" ;;
  coldall)
    timeout 560 python3 bench/gpu_coldstart.py --dynamic-batch --dynamic-time --from-disk > "$out/cold_all64.log" 2>&1
    echo "cold all buckets exit $?" | tee -a "$out/cold_all64.log" ;;
  coldlayer)
    scope=${SCOPE:-encoder}; opts="--option compile_scope=$scope --option dynamic_batch=true --option dynamic_time=true"
    timeout 200 python3 -m core check --model demo --backend fast:fp16:cuda $opts > "$out/check_demo_$scope.log" 2>&1
    echo "check demo, scope $scope, exit $?" | tee -a "$out/check_demo_$scope.log"
    timeout 330 python3 bench/gpu_coldstart.py --compile-scope $scope --dynamic-batch --dynamic-time --from-disk \
      > "$out/cold_all64_$scope.log" 2>&1
    echo "cold all buckets, scope $scope, exit $?" | tee -a "$out/cold_all64_$scope.log" ;;
  coldlayerw1)
    variants=${VARIANTS:-fast:fp16:compile+graphs,fast:fp16:dynamic-compile+graphs,fast:fp16:encoder-dynamic-compile+graphs,fast:fp16:layer-dynamic-compile+graphs}
    timeout 560 python3 bench/gpu_w1.py --eval-demo --budget-s 500 --warmup 20 --repeats 100 --variants $variants \
      > "$out/w1_layer.log" 2>&1
    echo "w1 by region exit $?" | tee -a "$out/w1_layer.log" ;;
  servecheck)
    # the served default's outputs at every batch size: Triton's Python backend, two instances, max batch 16, the
    # fast backend with its defaults (by part, batch and length dynamic), then the conformance matrix over gRPC
    timeout 300 /tmp/tv/bin/python -m core serve --model demo --backend fast:fp16:cuda --python-backend \
      --instances ${INSTANCES:-2} --max-batch 16 --warmup-seconds 5 --name gpucheck ${INPUT_DTYPE:+--input-dtype $INPUT_DTYPE} \
      > "$out/serve_demo.log" 2>&1
    echo "serve exit $?" | tee -a "$out/serve_demo.log"
    timeout 240 /tmp/tv/bin/python -m core check --model demo --backend triton:fp16:grpc --triton-url 127.0.0.1:8001 \
      > "$out/check_triton_demo.log" 2>&1
    echo "check triton exit $?" | tee -a "$out/check_triton_demo.log"
    /tmp/tv/bin/python -m core serve --stop --name gpucheck >> "$out/serve_demo.log" 2>&1
    cp "$WORKBENCH_ARTIFACTS/triton/gpucheck.log" "$out/server_gpucheck.log" 2>/dev/null
    # the GPU-only tests of the served batch's page-locked buffer (pytest staged with the wheels)
    timeout 200 /tmp/tv/bin/python -m pytest -q -p no:cacheprovider tests/test_triton.py tests/test_triton_gpus.py \
      -k "page_locked or cuda or sm_clock" \
      > "$out/pinned_test.log" 2>&1
    echo "page-locked test exit $?" | tee -a "$out/pinned_test.log" ;;
  graphmem)
    timeout 300 python3 bench/gpu_coldstart.py --dynamic-batch --buckets-s 5 --runs warm \
      --batch-buckets $(seq 1 32) > "$out/graphmem.log" 2>&1
    echo "graph memory exit $?" | tee -a "$out/graphmem.log"
    # the GPU-only test of the same (needs pytest staged: add pytest pluggy iniconfig packaging to pack-wheels.sh)
    timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_fast_backend.py -k shared_pool > "$out/graphmem_test.log" 2>&1
    echo "graph memory test exit $?" | tee -a "$out/graphmem_test.log" ;;
  check)
    timeout 540 python3 -m core check --model demo --backend fast:fp16:cuda > "$out/check_demo.log" 2>&1
    echo "check demo exit $?" | tee -a "$out/check_demo.log" ;;
  gemmlt)
    rows=${ROWS:-249}
    timeout 500 python3 bench/gemm_lt.py --rows $rows --json "$out/gemm_lt_m$rows.json" > "$out/gemm_lt_m$rows.log" 2>&1
    echo "gemm_lt rows $rows exit $?" | tee -a "$out/gemm_lt_m$rows.log" ;;
  sdpa)
    timeout 300 python3 bench/sdpa_backends.py --json "$out/sdpa_backends.json" > "$out/sdpa_backends.log" 2>&1
    echo "sdpa exit $?" | tee -a "$out/sdpa_backends.log" ;;
  aoti)
    timeout 560 python3 bench/aoti_load_probe.py > "$out/aoti_probe.log" 2>&1; echo "aoti probe exit $?" | tee -a "$out/aoti_probe.log" ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
cp "$WORKBENCH_ARTIFACTS/results.sqlite" "$out/results-$phase.sqlite" 2>/dev/null
tail -n 30 "$out"/*.log
