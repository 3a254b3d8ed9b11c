"""Print a comparison table of finished ltcore runs read from MLflow: mean ± std over seeds.

Rows are either the labels of a manifest written by ``compare_baselines.sh`` (one
``label<TAB>run_id`` line per run), or, without a manifest, the plugin sets of all finished runs of
the experiment (the ``plugins`` tag). Columns are the final figures each run logged on its parent
MLflow run (``val/acc``, ``test/acc``, ``test/many``, ...); std is the sample standard deviation
over the runs of a row (``-`` for a single run). Self-contained: needs only the MLflow client.

    python examples/compare.py --tracking-uri sqlite:///compare.db --experiment compare-baselines
    python examples/compare.py --manifest runs-compare/manifest.tsv --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

COLUMNS = ("val/acc", "test/acc", "test/many", "test/medium", "test/few", "test/hmean")


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for fewer than two values)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def collect(client, experiment: str, manifest: str | None) -> dict[str, list]:
    """Label -> the finished MLflow parent runs behind it, in first-seen order."""
    rows: dict[str, list] = {}
    if manifest:
        with open(manifest) as fh:
            for line in fh:
                if line.strip():
                    label, run_id = line.rstrip("\n").split("\t")
                    run = client.get_run(run_id)
                    if run.info.status == "FINISHED":
                        rows.setdefault(label, []).append(run)
        return rows
    found = client.get_experiment_by_name(experiment)
    if found is None:
        sys.exit(f"no MLflow experiment {experiment!r} at {client.tracking_uri}")
    runs = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"], max_results=50000)
    for run in runs:
        if "mlflow.parentRunId" not in run.data.tags:
            rows.setdefault(run.data.tags.get("plugins", run.info.run_name), []).append(run)
    return rows


def table(rows: dict[str, list], columns=COLUMNS) -> list[dict]:
    """One record per label: runs, seeds and (mean, std) of each column."""
    records = []
    for label, runs in rows.items():
        record = {"label": label, "runs": len(runs),
                  "seeds": sorted({r.data.tags.get("seed", "?") for r in runs})}
        for column in columns:
            values = [r.data.metrics[column] for r in runs if column in r.data.metrics]
            record[column] = mean_std(values) if values else None
        records.append(record)
    return sorted(records, key=lambda r: -(r["test/acc"] or (-math.inf,))[0])


def format_table(records: list[dict], columns=COLUMNS) -> str:
    def cell(value):
        if value is None:
            return "-"
        mean, std = value
        return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"

    header = ["plugins", "n"] + list(columns)
    body = [[r["label"], str(r["runs"])] + [cell(r[c]) for c in columns] for r in records]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in
                       enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                               enumerate(zip(row, widths))))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI",
                                                                 "sqlite:///mlflow.db"))
    parser.add_argument("--experiment", default="compare-baselines")
    parser.add_argument("--manifest", help="label<TAB>run_id lines (rows in this order)")
    parser.add_argument("--json", action="store_true", help="print JSON records")
    args = parser.parse_args(argv)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.tracking_uri)
    records = table(collect(client, args.experiment, args.manifest))
    if not records:
        sys.exit("no finished runs to compare")
    print(json.dumps(records, indent=2) if args.json else format_table(records))


if __name__ == "__main__":
    main()
