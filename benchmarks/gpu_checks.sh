#!/usr/bin/env bash
# The figures issue 5 still needs from a GPU, as one call of the device tool (under 10
# minutes on one H100 or H200):
#   1. the CUDA tests (pytest -m gpu);
#   2. one search iteration at the paper's 321x321 crop, batch 2, with default options,
#      with partial channels (K=4) and with checkpointing on; peak memory is
#      torch.cuda.max_memory_allocated (the target: under 8 GB);
#   3. S/M/L inference and training speed at 1024x2048 and 512x1024 in fp32, and in bf16 at
#      1024x2048;
#   4. auto-deeplab-s at 512x1024 under torch.compile (Inductor), compile time apart.
#
#   device run:  bash benchmarks/gpu_checks.sh        (results in $OUT: results.jsonl, log.txt)
#   anywhere:    OUT=gpu_checks bash benchmarks/gpu_checks.sh
#
# It runs the machine's python3 (CUDA PyTorch) on src/ through PYTHONPATH; the synthetic data
# these use needs nothing beyond torch, numpy, PyYAML, Pillow and matplotlib. Every step has
# its own time limit, so one that hangs or runs out of memory costs only its slot; its exit
# status is printed either way. CROP, SIZES, BF16_SIZES and MODELS shrink it for a smoke run
# on CPU (e.g. CROP=32 SIZES=64x128 BF16_SIZES=64x128 MODELS=auto-deeplab-s); SKIP_COMPILE=1
# leaves out step 4.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_checks}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
crop="${CROP:-321}"
sizes="${SIZES:-1024x2048,512x1024}"
bf16_sizes="${BF16_SIZES:-1024x2048}"
models="${MODELS:-auto-deeplab-s,auto-deeplab-m,auto-deeplab-l}"
small_size="${sizes##*,}"

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a time limit; JSON to results.jsonl
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name: $*" >>"$out/log.txt"
    timeout "$limit" "$@" >>"$out/results.jsonl" 2>>"$out/log.txt"
    echo "$name: exit $? after $((SECONDS - start)) s (limit $limit s)"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"; } | tee "$out/gpu.txt"
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
step search_default 60 "$py" benchmarks/search_step.py --crop "$crop" --iters 2 --warmup 1 \
    --min-seconds 0
step search_partial_channels 60 "$py" benchmarks/search_step.py --crop "$crop" --iters 2 \
    --warmup 1 --min-seconds 0 --partial-channels 4
# auto leaves checkpointing off on a large GPU (the estimate is under half its memory): the
# third run measures it on, the memory option the first two do not show there.
step search_checkpointing_on 60 "$py" benchmarks/search_step.py --crop "$crop" --iters 2 \
    --warmup 1 --min-seconds 0 --checkpoint-cells on
# pytest's report is no JSON: it goes to log.txt. A test module whose optional dependency the
# machine lacks (cityscapesscripts) must not stop the collection of the GPU tests.
step pytest_gpu 90 sh -c '"$0" -m pytest -q -p no:cacheprovider -m gpu \
    --continue-on-collection-errors tests >&2' "$py"
step model_speed_fp32 150 "$py" benchmarks/model_speed.py --models "$models" --sizes "$sizes" \
    --iters 3 --warmup 1 --channels-last
step model_speed_bf16 90 "$py" benchmarks/model_speed.py --models "$models" \
    --sizes "$bf16_sizes" --iters 3 --warmup 1 --channels-last --amp bf16
[ "${SKIP_COMPILE:-0}" = 1 ] || step model_speed_compile 120 "$py" benchmarks/model_speed.py --models auto-deeplab-s \
    --sizes "$small_size" --iters 3 --warmup 1 --channels-last --compile
