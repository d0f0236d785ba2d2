#!/usr/bin/env bash
# The deployment's GPU checks in one go, on a machine with an NVIDIA GPU (README, Deployment):
#   1. the TensorRT tests (test/deploy/test_tensorrt.py: engine parity with eager CUDA for every backend,
#      fp32 and fp16, engine reuse and rebuild), which skip on machines without CUDA;
#   2. per backend, eager CUDA and TensorRT fp32 / fp16 / int8 latency side by side (`benchmark --runtime torch
#      --runtime tensorrt`; int8 calibrated on 16 synthetic scenes, an entropy calibrator with a calibration
#      cache: test_tensorrt.py checks that a rebuild reads it), written as JSON to $OUT and summarised as a table.
# Needs a Python ($PYTHON, default .venv/bin/python) with a CUDA build of torch and the tensorrt package
# (`pip install -e .[tensorrt]`); it says which is missing and exits 2 otherwise. Every check runs even when
# one fails (no `set -e`): the failures are listed after the summary, and the exit status is then 1.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu_check}
RUNS=${RUNS:-50}

"$PYTHON" - <<'EOF' || exit 2
import importlib.util, sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu-check: torch {torch.__version__} sees no CUDA device")
if importlib.util.find_spec("tensorrt") is None:
    sys.exit("gpu-check: the tensorrt package is missing: pip install -e .[tensorrt]")
import tensorrt
print(f"gpu-check: {torch.cuda.get_device_name()}, torch {torch.__version__}, TensorRT {tensorrt.__version__}")
EOF

mkdir -p "$OUT"
export PANOPTIC_PERCEPTION_CACHE=${PANOPTIC_PERCEPTION_CACHE:-$PWD/$OUT/cache}
failed=()
"$PYTHON" -m pytest -q -rs test/deploy/test_tensorrt.py 2>&1 | tee "$OUT/tensorrt_tests.txt" \
  || failed+=("TensorRT tests (see $OUT/tensorrt_tests.txt)")

for backend in twinlitenet yolopv2 fusion_panoptic cyclenet cross_cooperative; do
  weights=()
  [ "$backend" = yolopv2 ] && weights=(--random-weights)  # the paper's full-size network, not the small bundled one
  for precision in fp32 fp16 int8; do
    calibration=()
    [ "$precision" = int8 ] && calibration=(--calibration synthetic:16+0)
    "$PYTHON" -m panoptic_perception.cli benchmark --backend "$backend" "${weights[@]}" --device cuda --paths fast \
      --runtime torch --runtime tensorrt --precision "$precision" "${calibration[@]}" --runs "$RUNS" --warmup 10 --json \
      > "$OUT/${backend}_${precision}.json" || failed+=("benchmark $backend $precision")
  done
done

# A failed benchmark leaves no (or no valid) JSON: its cells say "failed".
"$PYTHON" - "$OUT" <<'EOF' | tee "$OUT/summary.md" || failed+=("summary")
import json, sys
from pathlib import Path

def report(backend, precision):
    try:
        return json.loads((Path(sys.argv[1]) / f"{backend}_{precision}.json").read_text())
    except (OSError, ValueError):
        return None

def fps(report, run):
    try:
        return f"{report['paths'][run]['fps']['median']:.1f}"
    except (TypeError, KeyError):
        return "failed"

print("| backend | input | eager CUDA FPS | TensorRT fp32 FPS | TensorRT fp16 FPS | TensorRT int8 FPS |")
print("| --- | --- | --- | --- | --- | --- |")
for backend in ("twinlitenet", "yolopv2", "fusion_panoptic", "cyclenet", "cross_cooperative"):
    fp32, fp16, int8 = report(backend, "fp32"), report(backend, "fp16"), report(backend, "int8")
    size = next(("x".join(map(str, r["input_size"])) for r in (fp32, fp16, int8) if r and "input_size" in r), "?")
    print(f"| {backend} | {size} | {fps(fp32, 'fast/torch')} | {fps(fp32, 'fast/tensorrt')} | {fps(fp16, 'fast/tensorrt')} "
          f"| {fps(int8, 'fast/tensorrt')} |")
EOF

if ((${#failed[@]})); then
  printf 'gpu-check: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "gpu-check: every check passed"
