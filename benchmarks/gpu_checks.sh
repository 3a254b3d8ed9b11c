#!/usr/bin/env bash
# The GPU checks and benchmarks in one call, with a short table per part.
#   bash benchmarks/gpu_checks.sh            # on a CUDA machine (falls back to the CPU)
# 1. the view-pipeline tests on the accelerator's torch (batched ops vs torchvision)
# 2. view throughput: batched on the device vs the per-image reference with all cores
# 3. training-step throughput of the BCL recipe, batched views, bf16 autocast
# 4. image files: training images/s of the file pipeline per backend (JPEGs decoded on the device)
# 5. loss scaling: BCL with class count, GML with queue size (time and peak memory)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MLFLOW_DISABLE_TELEMETRY=true
for p in plugins/*/; do PYTHONPATH="$PYTHONPATH:$PWD/$p"; done
device=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
workers=$(python3 -c "import os; print(min(16, os.cpu_count()))")
echo "== device: $device ($(python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"))"
echo "== 1. view tests"
python3 -m pytest tests/views -q -p no:cacheprovider 2>&1 | tail -1
echo "== 2. view throughput"
if [ "$device" = cuda ]; then
  python3 benchmarks/views.py --device cuda --images 262144 --batch-size 8192 --workers "$workers" --compile
else
  python3 benchmarks/views.py --workers "$workers"
fi
echo "== 3. training-step throughput"
python3 benchmarks/step.py --plugin bcl --device "$device" --views batched --epochs 2
python3 benchmarks/step.py --plugin bcl --device "$device" --views reference --workers "$workers" --epochs 1
echo "== 4. image-file throughput"
if [ "$device" = cuda ]; then
  python3 benchmarks/files.py --device cuda --images 4096 --batch-size 256 --workers "$workers"
else
  python3 benchmarks/files.py --images 256 --epochs 1 --workers "$workers"
fi
echo "== 5. loss scaling"
python3 benchmarks/losses.py --device "$device" --quick
