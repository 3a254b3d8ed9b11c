#!/usr/bin/env bash
# Wheels of what ltrun needs and a GPU image lacks (MLflow, open_clip and their dependencies), for Python 3.12
# on x86-64 Linux, into .whl/ (ignored by git): gpu_checks.sh installs them when `import mlflow`
# fails there. Run here, where pip reaches the package registry:
#   bash benchmarks/gpu_wheels.sh            # about 35 MiB
# PRESENT lists the packages the GPU image already holds; their wheels are dropped again.
set -euo pipefail
cd "$(dirname "$0")/.."
mlflow=$(sed -n 's/^mlflow==//p' constraints.txt)
open_clip=$(sed -n 's/^open-clip-torch==//p' constraints.txt)
ftfy=$(sed -n 's/^ftfy==//p' constraints.txt)
regex=$(sed -n 's/^regex==//p' constraints.txt)
wcwidth=$(sed -n 's/^wcwidth==//p' constraints.txt)
PRESENT="aiohappyeyeballs aiohttp aiosignal anyio attrs certifi charset-normalizer click
cloudpickle contourpy cycler filelock fonttools frozenlist fsspec h11 httpcore httpx idna jinja2
joblib kiwisolver markdown markupsafe matplotlib multidict narwhals networkx numpy packaging
pandas pillow pluggy propcache protobuf pyarrow pyparsing python-dateutil pyyaml requests
scikit-learn scipy six sympy threadpoolctl tqdm typing-extensions urllib3 werkzeug yarl zipp"
rm -rf .whl && mkdir .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform any -d .whl "mlflow==${mlflow:?constraints.txt pins no mlflow}"
# open_clip's own wheels only: torch, torchvision and timm (with huggingface_hub and
# safetensors) are on the GPU image
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl "open-clip-torch==${open_clip:?constraints.txt pins no open-clip-torch}" \
  "ftfy==${ftfy:?}" "regex==${regex:?}" "wcwidth==${wcwidth:?}"
for wheel in .whl/*.whl; do
  name=$(basename "$wheel" | cut -d- -f1 | tr '_.' '--' | tr '[:upper:]' '[:lower:]')
  for present in $PRESENT; do
    [ "$name" = "$present" ] && rm "$wheel" && break
  done
done
echo "$(ls .whl | wc -l) wheels, $(du -sm .whl | cut -f1) MiB in .whl/"
