#!/usr/bin/env bash
# What a lent accelerator runs, one stage per call (README "Training on a lent GPU"). The working tree travels
# with .gpu/ carried: the teacher's ONNX, the wheels the machine lacks, and crop-cache chunks
# (python -m pruning.data.transfer pack). Everything persists in /tmp/gpu while the machine stays warm.
#   setup   : install wheels, keep the teacher, unpack the carried chunks, time the teacher and each family
#   unpack  : unpack the carried chunks
#   train   : live-teacher distillation (TRAIN_ARGS), then the pruning runs (PRUNE_RUNS), results to $OUT
set -euo pipefail
G=/tmp/gpu
mkdir -p "$G/crops" "$G/site"
export PYTHONUNBUFFERED=1 PYTHONPATH="$G/site:$PWD"
if [ -d .gpu/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$G/site" .gpu/whl/*.whl
fi
if [ -f .gpu/teacher.onnx ]; then cp .gpu/teacher.onnx "$G/teacher.onnx"; fi
unpack() {
  if compgen -G ".gpu/chunk-*.npz" >/dev/null; then
    python3 -m pruning.data.transfer unpack .gpu/chunk-*.npz --crops-root "$G/crops" --workers 16
  fi
  echo "crops on the machine: $(cat "$G"/crops/*/shard-*.jsonl 2>/dev/null | grep -c '"row"') faces, $(du -sh "$G/crops" | cut -f1)"
}
case "${1:?stage}" in
  setup)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, onnx2torch, torch_pruning; print('torch', torch.__version__, torch.cuda.get_device_name())"
    unpack
    python3 -m pruning.live bench --teacher "$G/teacher.onnx" --batch-size 512 --steps 15 ${BENCH_ARGS:-}
    ;;
  unpack)
    unpack
    ;;
  train)
    unpack
    R="$G/runs"
    mkdir -p "$R"
    # shellcheck disable=SC2086
    python3 -m pruning.live train --crops-root "$G/crops" --teacher "$G/teacher.onnx" --run-dir "$R/live" $TRAIN_ARGS \
      2>&1 | tr '\r' '\n' | grep -v "live distillation" || true
    for f in "$R"/live/*-best.pt; do cp "$f" "$OUT/"; done
    tar -czf "$OUT/logs.tar.gz" -C "$R" live/metrics.jsonl live/summary.json
    # PRUNE_RUNS: ';'-separated argument lists for `python -m pruning.live prune` (run dir named by --run-dir)
    IFS=';' read -ra RUNS <<< "${PRUNE_RUNS:-}"
    for run in "${RUNS[@]}"; do
      [ -n "$run" ] || continue
      # shellcheck disable=SC2086
      python3 -m pruning.live prune --crops-root "$G/crops" --teacher "$G/teacher.onnx" $run 2>&1 | tr '\r' '\n' | tail -3 || true
      (cd "$R" && tar -czf "$OUT/logs.tar.gz" live/metrics.jsonl live/summary.json $(ls -d prune-*/history.json 2>/dev/null))
      for f in "$R"/prune-*/level-*.pt; do
        [ -f "$f" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")")-$(basename "$f")"
      done
    done
    ls -la "$OUT"
    ;;
esac
