#!/usr/bin/env bash
# Train the baselines and the installed method plugins on one dataset (default: the embedded
# digits-lt) with a few seeds, then print mean ± std of val/test accuracy, many, medium, few and
# harmonic mean per plugin set, read back from MLflow by examples/compare.py.
#
#   examples/compare_baselines.sh                       # 30 epochs, seeds 0 1 2, ResNet-32
#   EPOCHS=5 SEEDS="0 1" EXTRA="--set model.backbone=resnet8 --batch-size 64" \
#       examples/compare_baselines.sh                   # a quick CPU pass
#   ONLY="ce ldam-drw kcl" examples/compare_baselines.sh  # a subset of the labels below
#
# Environment: EPOCHS, SEEDS, EXPERIMENT, TRACKING_URI, OUTPUT, EXTRA (more ltrun options),
# ONLY (labels to run), LTRUN (the ltrun command), PYTHON. Plugin sets whose plugins are not
# installed (or failed to load) are skipped with a note. Every run's id is appended to
# $OUTPUT/manifest.tsv, which the table is built from, so re-running adds seeds to the rows.
set -euo pipefail

EPOCHS=${EPOCHS:-30}
SEEDS=${SEEDS:-"0 1 2"}
EXPERIMENT=${EXPERIMENT:-compare-baselines}
TRACKING_URI=${TRACKING_URI:-sqlite:///compare.db}
OUTPUT=${OUTPUT:-runs-compare}
EXTRA=${EXTRA:-}
LTRUN=${LTRUN:-ltrun}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DRW_EPOCH=$(( EPOCHS * 4 / 5 ))  # LDAM-DRW re-weights the last fifth (160 of 200)

# label | plugins | extra options of that set
SETS=(
  "ce|ce|"
  "la|la|"
  "balanced-softmax|balanced-softmax|"
  "focal|focal|"
  "cb-ce|cb|"
  "cb-focal|cb|--set cb.loss=focal"
  "ldam-drw|ldam-drw|--set ldam-drw.drw_epoch=$DRW_EPOCH"
  "supcon|supcon|"
  "kcl|kcl|"
  "ce+crt|ce crt|"
  "ce+tau-norm|ce tau-norm|"
  "ce+lws|ce lws|"
  "kcl+crt|kcl crt|"
  "la (post-hoc)|ce|--set eval.posthoc_la_tau=1"
  "bcl|bcl|"
  "bcl+rcl|bcl rcl|"
  "rcl|rcl|"
  "supcon+rcl|supcon rcl|"
  "iccl|iccl|"
  "cogloat|cogloat|"
  "cogloat+proco|cogloat proco|"
  "gml|gml|"
)

mkdir -p "$OUTPUT"
MANIFEST="$OUTPUT/manifest.tsv"
AVAILABLE=" $($LTRUN plugins --json 2>/dev/null | $PYTHON -c '
import json, sys
print(" ".join(p["name"] for p in json.load(sys.stdin) if not p["error"]))') "

for entry in "${SETS[@]}"; do
  IFS="|" read -r label plugins options <<< "$entry"
  if [[ -n "${ONLY:-}" && " $ONLY " != *" $label "* ]]; then
    continue
  fi
  plugin_args=()
  missing=""
  for p in $plugins; do
    [[ "$AVAILABLE" == *" $p "* ]] || missing="$missing $p"
    plugin_args+=(--plugin "$p")
  done
  if [[ -n "$missing" ]]; then
    echo "skipping $label: not installed or failed to load:$missing" >&2
    continue
  fi
  for seed in $SEEDS; do
    echo "== $label, seed $seed" >&2
    # shellcheck disable=SC2086  # options and EXTRA are word lists
    out=$($LTRUN "${plugin_args[@]}" $options $EXTRA --epochs "$EPOCHS" --seed "$seed" \
          --experiment "$EXPERIMENT" --tracking-uri "$TRACKING_URI" --output "$OUTPUT" \
          --no-progress)
    echo "$out" >&2
    run_id=$(sed -n 's/^run \([0-9a-f]*\) finished.*/\1/p' <<< "$out")
    printf '%s\t%s\n' "$label" "$run_id" >> "$MANIFEST"
  done
done

$PYTHON "$HERE/compare.py" --tracking-uri "$TRACKING_URI" --manifest "$MANIFEST"
