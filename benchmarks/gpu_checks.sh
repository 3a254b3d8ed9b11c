#!/usr/bin/env bash
# The GPU checks and benchmarks in one call, with a short table per part.
#   bash benchmarks/gpu_checks.sh            # on a CUDA machine (falls back to the CPU)
# 1. the view-pipeline tests on the accelerator's torch (batched ops vs torchvision)
# 2. view throughput: batched on the device vs the per-image reference with all cores
# 3. training-step throughput of the BCL recipe, batched views, bf16 autocast
# 4. image files: training images/s of the file pipeline per backend (JPEGs decoded on the device)
# 5. loss scaling: BCL with class count, GML with queue size (time and peak memory)
# 6. speed: the reference-style pipeline against the fast path (benchmarks/speed.py)
# 7. the full 200-epoch BCL cifar10-lt run, its model kept as benchmarks/reproductions/
# 8. several runs on one GPU (benchmarks/sharing.py, N = 1, 2, 4, 8)
# 9. (only when named) what each fast-path switch buys: benchmarks/speed.py --ablate
# 10. a GML text-centre training step of CLIP RN50 and ViT-B/16 towers (random init, 224 px,
#     ViT-B/16 also at 384), batch 64, bf16: benchmarks/clip_step.py (needs open_clip)
# Parts: 1-8 and 10 by default, or those named, e.g. `bash benchmarks/gpu_checks.sh 6 7 8`.
# Parts 6-8 read CIFAR-10-LT IF 100 from .gpu-data/cifar10-lt-if100.tar.gz (benchmarks/pack_data.py
# pack) when ../shared is not there, and ltrun's MLflow and open_clip from wheels in .whl/ when missing;
# on a GPU they write benchmarks/results/gpu-speed.json (the CPU fallback: /tmp/ltcore-cpu-results).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MLFLOW_DISABLE_TELEMETRY=true
for p in plugins/*/; do PYTHONPATH="$PYTHONPATH:$PWD/$p"; done
device=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
workers=$(python3 -c "import os; print(min(16, os.cpu_count()))")
echo "== device: $device ($(python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"))"
parts="${*:-1 2 3 4 5 6 7 8 10}"
want() { [[ " $parts " == *" $1 "* ]]; }
if ! python3 -c "import sys; from importlib.metadata import entry_points as e; sys.exit(not any(
    p.name == 'bcl' for p in e(group='ltcore')))" 2>/dev/null; then  # entry points for ltrun
  python3 -m pip install -q --no-deps --no-index --no-build-isolation --no-compile \
    --target /tmp/ltcore-site . plugins/*/ && export PYTHONPATH="/tmp/ltcore-site:$PYTHONPATH"
fi
if ! python3 -c "import mlflow, open_clip" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
data=../shared/data/cifar10-jpeg
if [ ! -d "$data/train" ] && [ -f .gpu-data/cifar10-lt-if100.tar.gz ]; then
  data=/tmp/cifar10-jpeg
  python3 benchmarks/pack_data.py unpack .gpu-data/cifar10-lt-if100.tar.gz "$data" >/dev/null
fi
if want 1; then
echo "== 1. view tests"
python3 -m pytest tests/views -q -p no:cacheprovider 2>&1 | tail -1
fi
if want 2; then
echo "== 2. view throughput"
if [ "$device" = cuda ]; then
  python3 benchmarks/views.py --device cuda --images 262144 --batch-size 8192 --workers "$workers" --compile
else
  python3 benchmarks/views.py --workers "$workers"
fi
fi
if want 3; then
echo "== 3. training-step throughput"
python3 benchmarks/step.py --plugin bcl --device "$device" --views batched --epochs 2
python3 benchmarks/step.py --plugin bcl --device "$device" --views reference --workers "$workers" --epochs 1
fi
if want 4; then
echo "== 4. image-file throughput"
if [ "$device" = cuda ]; then
  python3 benchmarks/files.py --device cuda --images 4096 --batch-size 256 --workers "$workers"
else
  python3 benchmarks/files.py --images 256 --epochs 1 --workers "$workers"
fi
fi
if want 5; then
echo "== 5. loss scaling"
python3 benchmarks/losses.py --device "$device" --quick
fi
results=benchmarks/results  # the CPU fallback's figures are only a check: kept out of the tree
[ "$device" = cuda ] || results=/tmp/ltcore-cpu-results
export RESULTS="$results"
mkdir -p "$results"
if want 6; then
echo "== 6. speed: reference-style pipeline vs fast path"
if [ "$device" = cuda ]; then
  python3 benchmarks/speed.py --device cuda --data-dir "$data" --workers "$workers" \
    --json "$results/speed.json"
else
  python3 benchmarks/speed.py --tiny --device cpu --data-dir "$data" --json "$results/speed.json"
fi
fi
if want 7; then
echo "== 7. BCL cifar10-lt, 200 epochs"
epochs=200; extra=()
[ "$device" = cuda ] || { epochs=1; extra=(--set model.backbone=resnet8); }
out=/tmp/ltcore-200ep
rm -rf "$out"; mkdir -p "$out"
start=$(python3 -c "import time; print(time.time())")
python3 -m ltcore --plugin bcl --preset cifar10-lt --dataset imagefolder-lt --data-dir "$data" \
  --epochs "$epochs" --output "$out/runs" --tracking-uri "sqlite:///$out/mlflow.db" \
  --no-progress "${extra[@]}" 2>&1 | tail -4
python3 - "$out" "$start" "$epochs" <<'PY'
import json, os, sys, shutil, time
from pathlib import Path
out, wall, epochs = Path(sys.argv[1]), time.time() - float(sys.argv[2]), int(sys.argv[3])
folder = next(p for p in (out / "runs").iterdir() if (p / "model.pt").exists())
rows = (folder / "metrics.csv").read_text().splitlines()
header, last = rows[0].split(","), rows[-1].split(",")
val_acc = float(last[header.index("val/acc")])
record = {"wall_s": wall, "epochs": epochs, "val_acc": val_acc, "run": folder.name}
if epochs == 200:
    target = Path("benchmarks/reproductions/bcl-cifar10-lt-seed0.pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "model.pt", target)
    record["model"] = str(target)
Path(os.environ["RESULTS"], "bcl-200ep.json").write_text(json.dumps(record, indent=2))
print(f"{epochs} epochs: {wall:.0f} s wall-clock, val top-1 {val_acc:.2f}%")
PY
fi
if want 8; then
echo "== 8. several runs on one device"
if [ "$device" = cuda ]; then
  python3 benchmarks/sharing.py --device cuda:0 --counts 1,2,4,8 --epochs 3 --data-dir "$data" \
    --json "$results/sharing.json"
else
  python3 benchmarks/sharing.py --tiny --device cpu --epochs 2 --json "$results/sharing.json"
fi
fi
if want 9; then
echo "== 9. the fast path with one switch changed at a time"
if [ "$device" = cuda ]; then
  python3 benchmarks/speed.py --device cuda --data-dir "$data" --workers "$workers" --ablate \
    --epochs 2 --json "$results/speed-ablations.json"
else
  python3 benchmarks/speed.py --tiny --device cpu --data-dir "$data" --ablate \
    --json "$results/speed-ablations.json"
fi
fi
if want 6 && want 7; then
python3 - "$device" <<'PY'
import json, os, sys, time, torch
from pathlib import Path
results = Path(os.environ["RESULTS"])
speed = json.loads((results / "speed.json").read_text())
run = json.loads((results / "bcl-200ep.json").read_text())
record = {
    "device": speed["device"], "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
    "bcl_cifar10_lt_200ep_wall_s": run["wall_s"] if run["epochs"] == 200 else None,
    "speedup_vs_reference": speed["speedup_vs_reference"],
    "reference_samples_per_s": speed["reference"]["samples_per_s"],
    "fast_samples_per_s": speed["fast"]["samples_per_s"],
    "val_acc": run["val_acc"] if run["epochs"] == 200 else None,
    "peak_mem_gb": speed["fast"]["peak_mem_gb"],
}
name = "gpu-speed.json" if sys.argv[1] == "cuda" else "cpu-speed-check.json"
(results / name).write_text(json.dumps(record, indent=2) + "\n")
print(f"{results / name}: " + ", ".join(f"{k} {v}" for k, v in record.items()))
PY
fi
if want 10; then
echo "== 10. CLIP towers: one GML text-centre training step"
if ! python3 -c "import open_clip" 2>/dev/null; then
  echo "skipped: open_clip is not installed (pip install 'ltcore[clip]')"
else
  if [ "$device" = cuda ]; then
    python3 benchmarks/clip_step.py --device cuda --batch-size 64 --json "$results/clip-step.json"
  else
    python3 benchmarks/clip_step.py --tiny --device cpu --json "$results/clip-step.json"
  fi
  python3 - "$device" <<'PY'
import json, os, sys
from pathlib import Path
results = Path(os.environ["RESULTS"])
target = results / ("gpu-speed.json" if sys.argv[1] == "cuda" else "cpu-speed-check.json")
record = json.loads(target.read_text()) if target.exists() else {}
record["clip_step"] = json.loads((results / "clip-step.json").read_text())
target.write_text(json.dumps(record, indent=2) + "\n")
print(f"{target}: clip_step " + ", ".join(
    f"{r['backbone']}@{r['image_size']} {r['images_per_s']} images/s"
    for r in record["clip_step"]["rows"]))
PY
fi
fi
