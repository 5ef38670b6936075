#!/usr/bin/env bash
# Train a multi-task profile on the GPU machine from a packed training cache, with the
# trunk speed benchmark first. How the shipped model was trained (see the README's
# "Training on the GPU machine"):
#   here:   facefuse train configs/mtl.yaml --profile shipped_gpu --cache-only
#           python tools/pack_for_device.py --cache .facefuse-cache/mtl-XXXX --out .pack/cache \
#               --max-mib 52 --quality 88
#   device: one call per part (carry [".pack/cache/part-0k"]):
#               mkdir -p /root/pack && cp .pack/cache/part-0k/* /root/pack/
#   device, last call: bash tools/gpu_train.sh /root/pack shipped_gpu 480
# Arguments: PACK (folder holding every part's files), PROFILE of configs/mtl.yaml,
# SECONDS of training at most (a rerun resumes after the last finished epoch).
# TRAINER_BENCH=1 also times `facefuse train` against the model alone (docs/SPEED.md). Results
# go to $OUT (the device tool's folder) or ./gpu-out: the log, the benchmark, metrics and the
# checkpoint split into 15 MiB pieces (join with `cat final.safetensors.* > final.safetensors`).
set -euo pipefail
PACK=$1
PROFILE=${2:-shipped_gpu}
BUDGET=${3:-480}
OUT=${OUT:-$PWD/gpu-out}
CACHE_ROOT=${CACHE_ROOT:-/root/ffcache}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
if ! ls "$CACHE_ROOT"/mtl-*/meta.json >/dev/null 2>&1; then
  python3 tools/pack_for_device.py --unpack "$PACK" --out "$CACHE_ROOT"
fi
CACHE=$(dirname "$(ls "$CACHE_ROOT"/mtl-*/meta.json | head -1)")
if [ ! -s "$OUT/bench.txt" ] && [ "${SKIP_BENCH:-0}" != 1 ]; then
  python3 benchmarks/bench_trunks.py --cuda-only --size 96 --cuda-batch 256 --cache "$CACHE" \
    2>&1 | tee "$OUT/bench.txt"
fi
if [ "${TRAINER_BENCH:-0}" = 1 ] && [ ! -s "$OUT/bench_trainer.txt" ]; then
  # issue 6's figure: facefuse train against the model alone (defaults, fused AdamW, memory map)
  python3 benchmarks/bench_trunks.py --cuda-only --size 112 --cuda-batch 512 --synthetic 20000 \
    --trainer --trunks mobilenetv3_large_100 2>&1 | tee "$OUT/bench_trainer.txt"
fi
RUN=runs/$PROFILE
status=0
timeout "$BUDGET" python3 -m facefuse.cli -v train configs/mtl.yaml \
  --profile "$PROFILE" --set "cache=$CACHE" --quiet 2>&1 | tee -a "$OUT/train.log" || status=$?
for name in final last; do
  if [ -f "$RUN/$name.safetensors" ]; then
    split -b 15M -d "$RUN/$name.safetensors" "$OUT/$name.safetensors."
    cp "$RUN/$name.json" "$OUT/"
    break
  fi
done
[ -f "$RUN/metrics.json" ] && cp "$RUN/metrics.json" "$OUT/"
echo "training exit status $status"
