"""The tables and figures of Bach et al., *Global Contrastive Learning for Long-Tailed
Classification* (TMLR 2023), as runnable sweeps: ``ltrun reproduce cogloat:<name>``.

Each row uses its method's own presets: the paper's recipe for CoGloAT, CoGloAT + ProCo and the
MoCo-based KCL baseline (``moco-kcl``), the LDAM-DRW schedule for the re-weighting baselines, BCL's
for BCL. Rows of methods ltcore does not implement are left out (docs/methods/cogloat.md lists
them per table). Numbers are copied as printed; the paper's ± spreads are left out.
"""

from __future__ import annotations

from ltcore import PaperTable, TableColumn, TableRow

PAPER = "CoGloAT/ProCo (Bach et al. 2023)"
FACTORS = (100, 50, 10)
CIFAR = (("cifar10-lt", "CIFAR-10-LT"), ("cifar100-lt", "CIFAR-100-LT"))

KCL = TableRow(label="KCL", plugins=("cogloat",), presets=("moco-kcl",))
COGLOAT = TableRow(label="CoGloAT", plugins=("cogloat",))
FULL = TableRow(label="CoGloAT + ProCo", plugins=("cogloat", "proco"))


def cifar_columns(metric: str = "test/acc", suffix: str = "", datasets=CIFAR,
                  factors=FACTORS) -> list[TableColumn]:
    """One column per (dataset, imbalance factor), in the paper's order, on that dataset's
    preset (``cifar10-lt`` / ``cifar100-lt`` of each selected plugin)."""
    return [TableColumn(label=f"{title} {factor}{suffix}", metric=metric, presets=(preset,),
                        settings={"imbalance_factor": factor})
            for preset, title in datasets for factor in factors]


def cifar_numbers(rows: dict[str, tuple[float, ...]], columns: list[TableColumn]) -> dict:
    """``{(row, column): number}`` from each row's numbers in column order (``None``: not
    printed)."""
    return {(row, column.label): value for row, values in rows.items()
            for column, value in zip(columns, values, strict=True) if value is not None}


# -- Table 1: embedding metrics ---------------------------------------------------------------

TABLE1_METRICS = (("Intra", "test/alignment"), ("Variance", "test/variance"),
                  ("Inter", "test/uniformity"), ("Improved Inter", "test/improved-uniformity"))
TABLE1_PRINTED = {
    ("Intra", "KCL"): (0.43, 0.42, 0.42, 0.55, 0.57, 0.45),
    ("Intra", "Ours"): (0.41, 0.41, 0.39, 0.44, 0.43, 0.41),
    ("Variance", "KCL"): (0.65, 0.62, 0.61, 0.84, 0.85, 0.63),
    ("Variance", "Ours"): (0.61, 0.60, 0.57, 0.66, 0.65, 0.60),
    ("Inter", "KCL"): (0.70, 0.75, 0.83, 0.90, 0.95, 0.93),
    ("Inter", "Ours"): (0.73, 0.79, 0.85, 0.98, 1.00, 0.98),
    ("Improved Inter", "KCL"): (1.10, 1.25, 2.03, 1.91, 2.00, 2.31),
    ("Improved Inter", "Ours"): (1.20, 1.29, 2.20, 2.23, 2.36, 2.41),
}


def table1() -> PaperTable:
    columns = [column for title, metric in TABLE1_METRICS
               for column in cifar_columns(metric, f", {title}")]
    numbers = {}
    for (title, row), values in TABLE1_PRINTED.items():
        mine = [c for c in columns if c.label.endswith(f", {title}")]
        numbers.update(cifar_numbers({row: values}, mine))
    return PaperTable(
        name="table1", source=f"{PAPER}, Table 1",
        caption="Intra-class alignment, variance, inter-class uniformity and improved uniformity "
                "of the test features (eq. 9-13), KCL vs CoGloAT + ProCo, CIFAR-10/100-LT",
        rows=[KCL, TableRow(label="Ours", plugins=("cogloat", "proco"))],
        columns=columns, numbers=numbers)


# -- Table 2: CIFAR-LT top-1 ------------------------------------------------------------------

TABLE2_PRINTED = {
    "CE": (70.4, 74.8, 86.4, 38.3, 43.9, 55.7),
    "CB-CE": (72.4, 78.1, 86.8, 38.6, 44.6, 57.1),
    "Focal": (70.4, 76.7, 86.7, 38.4, 44.3, 55.8),
    "CE-DRW": (75.1, 78.9, 86.4, 40.5, 44.7, 56.2),
    "LDAM": (73.4, 76.8, 87.0, 39.6, 45.0, 56.9),
    "LDAM-DRW": (77.0, 80.9, 88.2, 42.0, 46.2, 58.7),
    "BCL": (84.3, 87.2, 91.1, 51.9, 56.6, 64.9),
    "KCL": (77.6, 81.7, 88.0, 42.8, 46.3, 57.6),
    "CoGloAT": (81.4, 84.5, 88.9, 45.4, 49.5, 60.7),
    "CoGloAT + ProCo": (81.6, 85.5, 89.4, 46.0, 50.4, 60.8),
}


def table2() -> PaperTable:
    columns = cifar_columns()
    rows = [
        TableRow(label="CE", plugins=("cb",), settings={"cb.beta": 0.0}),
        TableRow(label="CB-CE", plugins=("cb",)),
        TableRow(label="Focal", plugins=("focal",)),
        TableRow(label="CE-DRW", plugins=("cb",), settings={"cb.start_epoch": 160}),
        TableRow(label="LDAM", plugins=("ldam-drw",), settings={"ldam-drw.drw": False}),
        TableRow(label="LDAM-DRW", plugins=("ldam-drw",)),
        TableRow(label="BCL", plugins=("bcl",)),
        KCL, COGLOAT, FULL,
    ]
    return PaperTable(
        name="table2", source=f"{PAPER}, Table 2",
        caption="Top-1 accuracy on CIFAR-10/100-LT, ResNet-32, imbalance factors 100/50/10",
        rows=rows, columns=columns, numbers=cifar_numbers(TABLE2_PRINTED, columns))


# -- Table 3: ImageNet-LT ---------------------------------------------------------------------

SHOTS = (("Many", "test/many"), ("Medium", "test/medium"), ("Few", "test/few"),
         ("All", "test/acc"))
TABLE3_PRINTED = {
    "LWS": (57.1, 45.2, 29.3, 47.7),
    "BCL": (None, None, None, 56.0),
    "KCL": (61.8, 49.4, 30.9, 51.5),
    "KCL†": (59.5, 50.3, 38.5, 49.5),
    "Ours": (59.0, 49.5, 40.9, 49.8),
}


def table3() -> PaperTable:
    columns = [TableColumn(label=label, metric=metric) for label, metric in SHOTS]
    moco_kcl = ("imagenet-lt", "moco-kcl")
    rows = [
        TableRow(label="LWS", plugins=("lws",), presets=("imagenet-lt",)),
        TableRow(label="BCL", plugins=("bcl",), presets=("imagenet-lt-resnet50",)),
        TableRow(label="KCL", plugins=("cogloat",), presets=moco_kcl),
        TableRow(label="KCL†", plugins=("cogloat",), presets=moco_kcl),
        TableRow(label="Ours", plugins=("cogloat", "proco"), presets=("imagenet-lt",)),
    ]
    return PaperTable(
        name="table3", source=f"{PAPER}, Table 3",
        caption="Top-1 accuracy on ImageNet-LT (many / medium / few / all), ResNet-50",
        rows=rows, columns=columns, numbers=cifar_numbers(TABLE3_PRINTED, columns))


# -- Table 4: time per pre-training epoch ------------------------------------------------------

TABLE4_PRINTED = {
    "KCL": (12.0, 14.0, 21.0, 14.5, 15.5, 22.5),
    "Global selection": (28.5, 34.0, 50.5, 34.0, 37.5, 57.5),
    "Adaptive temperature": (12.5, 14.5, 22.0, 15.5, 16.5, 22.5),
    "ProCo": (22.0, 25.0, 35.0, 26.0, 27.5, 36.0),
}


def table4() -> PaperTable:
    columns = cifar_columns("train/epoch_time")
    rows = [
        KCL,
        TableRow(label="Global selection", plugins=("cogloat",), presets=("moco-kcl",),
                 settings={"cogloat.k": 3}),
        TableRow(label="Adaptive temperature", plugins=("cogloat",), presets=("moco-kcl",),
                 settings={"cogloat.adaptive_temperature": True}),
        TableRow(label="ProCo", plugins=("cogloat", "proco"), presets=("moco-kcl",)),
    ]
    return PaperTable(
        name="table4", source=f"{PAPER}, Table 4",
        caption="Seconds per pre-training epoch: KCL and KCL with each module added "
                "(10 pre-training epochs, no classifier stage)",
        settings={"epochs": 10, "cogloat.classifier_epochs": 0},
        rows=rows, columns=columns, numbers=cifar_numbers(TABLE4_PRINTED, columns))


# -- Tables 5 and 6: CIFAR-100-LT ablations ----------------------------------------------------

def table5() -> PaperTable:
    columns = cifar_columns(datasets=CIFAR[1:])
    rows = [
        TableRow(label="Adaptive", plugins=("cogloat",), presets=("moco-kcl",),
                 settings={"cogloat.adaptive_temperature": True}),
        TableRow(label="Proco", plugins=("cogloat", "proco"), presets=("moco-kcl",)),
    ]
    printed = {"Adaptive": (43.7, 48.6, 57.9), "Proco": (44.3, 47.8, 58.7)}
    return PaperTable(
        name="table5", source=f"{PAPER}, Table 5",
        caption="Top-1 accuracy of KCL with adaptive temperature or with ProCo, CIFAR-100-LT",
        rows=rows, columns=columns, numbers=cifar_numbers(printed, columns))


def table6() -> PaperTable:
    columns = cifar_columns(datasets=CIFAR[1:])
    rows = [
        TableRow(label="Supervised", plugins=("cogloat",),
                 settings={"cogloat.variant": "supervised+kglobal"}),
        TableRow(label="K-positive (KCL)", plugins=("cogloat",),
                 settings={"cogloat.variant": "kcl+kglobal"}),
        TableRow(label="Unsupervised", plugins=("cogloat",)),
    ]
    printed = {"Supervised": (43.7, 48.6, 57.9), "K-positive (KCL)": (44.3, 47.8, 58.7),
               "Unsupervised": (45.4, 50.4, 60.8)}
    return PaperTable(
        name="table6", source=f"{PAPER}, Table 6",
        caption="Top-1 accuracy of CoGloAT with supervised, KCL-style and unsupervised "
                "positives beside the k-global ones, CIFAR-100-LT",
        rows=rows, columns=columns, numbers=cifar_numbers(printed, columns))


# -- Figure 2: feature space of four tail classes ---------------------------------------------

def fig2() -> PaperTable:
    return PaperTable(
        name="fig2", source=f"{PAPER}, Figure 2", kind="figure", figure="projection-tsne",
        caption="Feature space of four tail classes (95, 96, 97, 99) of CIFAR-100-LT IF 100, "
                "constant vs adaptive temperature",
        rows=[TableRow(label="Constant temperature", plugins=("cogloat",),
                       settings={"cogloat.adaptive_temperature": False}),
              TableRow(label="Adaptive temperature", plugins=("cogloat",))],
        columns=[TableColumn(label="CIFAR-100-LT 100", presets=("cifar100-lt",),
                             settings={"imbalance_factor": 100})])


TABLES = [table1(), table2(), table3(), table4(), table5(), table6(), fig2()]
"""What the ``cogloat`` plugin registers (``register_tables``)."""
