"""RCL's tables as data (``ltrun reproduce rcl:table1`` ... ``rcl:table5``, ``rcl:fig3``).

Numbers are the paper's, as printed (percent for accuracies; Table 5's are index values). Rows
of methods ltcore does not implement are left out (docs/methods/rcl.md, "Paper tables").
"""

from __future__ import annotations

from ltcore import PaperTable, TableColumn, TableRow

from .plugin import CIFAR

SOURCE = "RCL (De Alvis et al.), Table {}"

RECIPE = {k: v for k, v in CIFAR.items() if not k.startswith(("rcl.", "bcl."))}
"""RCL's CIFAR-LT recipe, core keys only (sec. 4.2/4.3 on BCL's implementation): every row of
the ablations trains on it."""

LC = {"la.tau": 1.3, "la.weight": 2.0}
"""LA-CE with the paper's tau 1.3 and alpha 2 (sec. 4.3)."""
SCL = {"supcon.weight": 1.0, "supcon.temperature": 0.1}
"""SupCon with beta 1 and BCL's temperature."""
BCL = {"bcl.la_tau": 1.3, "bcl.classifier_weight": 2.0, "bcl.contrastive_weight": 1.0}
"""BCL's terms at the ablation's alpha, beta and tau (what RCL's preset sets on BCL)."""
RCL = {"rcl.la_tau": 1.3, "rcl.classifier_weight": 2.0, "rcl.contrastive_weight": 1.0,
       "rcl.temperature": 0.1, "rcl.compression": True, "rcl.compression_threshold": 0.2,
       "rcl.compression_factor_below": 1.0, "rcl.compression_factor_others": 0.005}
"""RCL at sec. 4.3: prior on, compression from epoch 100 of 200 (factor 1 below 20%, else
0.005)."""

ABLATION_ROWS = (
    TableRow(label="LC", plugins=("la",), settings=LC),
    TableRow(label="LC+SCL", plugins=("la", "supcon"), settings={**LC, **SCL}),
    TableRow(label="LC+SCL+BCL", plugins=("bcl",), settings=BCL),
    TableRow(label="LC+SCL+RCL", plugins=("rcl",), settings=RCL),
    TableRow(label="LC+SCL+BCL+RCL", plugins=("bcl", "rcl"), settings={**BCL, **RCL}),
    # RCL's two parts apart (not printed in the paper)
    TableRow(label="LC+SCL+RCL, prior off", plugins=("rcl",),
             settings={**RCL, "rcl.prior": False}),
    TableRow(label="LC+SCL+RCL, compression off", plugins=("rcl",),
             settings={**RCL, "rcl.compression": False}),
)
MEANS = (TableColumn(label="Arithmetic", metric="test/acc"),
         TableColumn(label="Harmonic", metric="test/hmean"))


def ablation(number: int, dataset: str, name: str, numbers: dict) -> PaperTable:
    return PaperTable(
        name=f"table{number}",
        caption=f"Ablation on {name}, IF 100: the additive effects of SCL, BCL and RCL on the "
                "LA-CE classifier (LC), arithmetic and harmonic mean of per-class top-1 "
                "accuracy; ResNet-32, 200 epochs",
        source=SOURCE.format(number),
        settings={**RECIPE, "dataset": dataset, "imbalance_factor": 100},
        rows=ABLATION_ROWS, columns=MEANS,
        numbers={(row, column): value for row, pair in numbers.items()
                 for column, value in zip(("Arithmetic", "Harmonic"), pair)})


TABLE1 = ablation(1, "cifar100-lt", "CIFAR-100-LT", {
    "LC": (44.0, 35.2), "LC+SCL": (51.1, 39.2), "LC+SCL+BCL": (51.9, 40.2),
    "LC+SCL+RCL": (52.2, 42.4), "LC+SCL+BCL+RCL": (52.1, 41.1)})
TABLE2 = ablation(2, "cifar10-lt", "CIFAR-10-LT", {
    "LC": (81.2, 80.5), "LC+SCL": (83.5, 83.1), "LC+SCL+BCL": (84.3, 83.7),
    "LC+SCL+RCL": (86.0, 85.3), "LC+SCL+BCL+RCL": (86.2, 85.7)})


LDAM_SCHEDULE = {
    "model.backbone": "resnet32", "views.classifier": "standard", "epochs": 200,
    "batch_size": 128, "optim.lr": 0.1, "optim.momentum": 0.9, "optim.weight_decay": 2e-4,
    "schedule.kind": "step", "schedule.warmup_epochs": 5, "schedule.milestones": [160, 180],
    "schedule.gamma": 0.01}
"""The LDAM-DRW reference's CIFAR-LT schedule, on which the quoted CE-family baselines were
trained (the core's baseline presets use the same)."""

CIFAR_COLUMNS = tuple(
    TableColumn(label=f"CIFAR-{classes}-LT IF {factor}",
                settings={"dataset": f"cifar{classes}-lt", "imbalance_factor": factor})
    for classes in (10, 100) for factor in (100, 50, 10))


def _cifar_row(label, plugins, settings=None, presets=()):
    return TableRow(label=label, plugins=plugins, presets=presets,
                    settings={**LDAM_SCHEDULE, **(settings or {})})


TABLE3_NUMBERS = {
    "CE": (70.4, 74.8, 86.4, 38.5, 43.9, 55.7),
    "LDAM+DRW": (77.2, 81.0, 88.2, 42.2, 46.6, 58.7),
    "LogitAdjust": (80.2, None, None, 43.9, None, 57.4),
    "CB+Focal": (74.6, 79.4, 87.1, 39.9, 45.2, 58.0),
    "BALMS": (84.9, None, 91.3, 50.8, None, 63.0),
    "Decoupled": (78.5, None, 91.1, 41.3, None, 63.4),
    "BCL": (84.3, 87.2, 91.1, 51.9, 56.6, 64.9),
    "RCL": (86.0, 88.5, 91.7, 52.2, 56.8, 65.6),
    "BCL+RCL": (86.2, 88.4, 92.0, 52.1, 56.0, 65.4),
}

TABLE3 = PaperTable(
    name="table3",
    caption="Top-1 accuracy against the state of the art on CIFAR-10/100-LT, IF 100/50/10, "
            "ResNet-32, 200 epochs; the baselines on the LDAM-DRW schedule, BCL, RCL and "
            "BCL+RCL on their papers' recipes",
    source=SOURCE.format(3),
    rows=(
        _cifar_row("CE", ("ce",)),
        _cifar_row("LDAM+DRW", ("ldam-drw",), presets=("cifar10-lt",)),
        _cifar_row("LogitAdjust", ("la",)),
        _cifar_row("CB+Focal", ("cb",), {"cb.loss": "focal"}, presets=("cifar10-lt",)),
        _cifar_row("BALMS", ("balanced-softmax",)),
        _cifar_row("Decoupled", ("ce", "crt"), presets=("cifar10-lt",)),
        TableRow(label="BCL", plugins=("bcl",), presets=("cifar10-lt",)),
        TableRow(label="RCL", plugins=("rcl",), presets=("cifar10-lt",)),
        TableRow(label="BCL+RCL", plugins=("bcl", "rcl"), presets=("cifar10-lt",)),
    ),
    columns=CIFAR_COLUMNS,
    numbers={(row, column.label): value for row, values in TABLE3_NUMBERS.items()
             for column, value in zip(CIFAR_COLUMNS, values) if value is not None},
)


KANG_SCHEDULE = {
    "dataset": "imagenet-lt", "views.classifier": "imagenet-standard", "epochs": 90,
    "batch_size": 512, "optim.lr": 0.2, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
    "schedule.kind": "cosine", "schedule.warmup_epochs": 0}
"""Kang et al.'s ImageNet-LT joint-training schedule (90 epochs), for the CE-family rows."""

IMAGENET_COLUMNS = (TableColumn(label="ResNet50", settings={"model.backbone": "resnet50"}),
                    TableColumn(label="ResNext50", settings={"model.backbone": "resnext50"}))


def _imagenet_row(label, plugins, settings=None, presets=()):
    return TableRow(label=label, plugins=plugins, presets=presets,
                    settings={**KANG_SCHEDULE, **(settings or {})})


TABLE4_NUMBERS = {
    "CE": (41.6, 44.4), "LDAM+DR": (49.8, None), "LogitAdjust": (50.9, None),
    "CB+Focal": (46.8, 45.3), "BalSoftMax": (None, 51.4), "Decoupled": (50.6, 49.6),
    "BCL": (56.2, 57.4), "BCL+RCL": (56.3, 57.5),
}

TABLE4 = PaperTable(
    name="table4",
    caption="Top-1 accuracy on ImageNet-LT (IF 256), ResNet-50 and ResNeXt-50, 90 epochs; the "
            "baselines on Kang et al.'s schedule, BCL and BCL+RCL on BCL's ImageNet recipe "
            "(lr 0.1)",
    source=SOURCE.format(4),
    settings={"dataset": "imagenet-lt"},
    rows=(
        _imagenet_row("CE", ("ce",)),
        _imagenet_row("LDAM+DR", ("ldam-drw",), {"ldam-drw.drw_epoch": 72}),
        _imagenet_row("LogitAdjust", ("la",)),
        _imagenet_row("CB+Focal", ("cb",), {"cb.loss": "focal"}),
        _imagenet_row("BalSoftMax", ("balanced-softmax",)),
        _imagenet_row("Decoupled", ("ce", "crt"), presets=("imagenet-lt",)),
        TableRow(label="BCL", plugins=("bcl",), presets=("imagenet-lt-resnet50",)),
        TableRow(label="BCL+RCL", plugins=("bcl", "rcl"), presets=("imagenet-lt-resnet50",)),
    ),
    columns=IMAGENET_COLUMNS,
    numbers={(row, column.label): value for row, values in TABLE4_NUMBERS.items()
             for column, value in zip(IMAGENET_COLUMNS, values) if value is not None},
)


EMBEDDING_COLUMNS = tuple(
    TableColumn(label=f"{name} {index}", metric=f"test/{metric}",
                settings={"dataset": dataset, "imbalance_factor": 100})
    for name, dataset in (("CIFAR100.Lt", "cifar100-lt"), ("CIFAR10.Lt", "cifar10-lt"))
    for index, metric in (("CHI", "calinski-harabasz"), ("DBI", "davies-bouldin")))

TABLE5 = PaperTable(
    name="table5",
    caption="Embedding quality at IF 100: Calinski-Harabasz (CHI, higher is better) and "
            "Davies-Bouldin (DBI, lower is better) indices of the learnt features, BCL against "
            "BCL+RCL, each on its paper's recipe (ResNet-32, 200 epochs)",
    source=SOURCE.format(5),
    settings={"eval.metrics": ["calinski-harabasz", "davies-bouldin"]},
    rows=(TableRow(label="BCL", plugins=("bcl",), presets=("cifar10-lt",)),
          TableRow(label="BCL+RCL", plugins=("bcl", "rcl"), presets=("cifar10-lt",))),
    columns=EMBEDDING_COLUMNS,
    numbers={(row, column.label): value
             for row, values in (("BCL", (3962.9, 0.97, 84.1, 4.1)),
                                 ("BCL+RCL", (4091.8, 0.94, 105.8, 4.0)))
             for column, value in zip(EMBEDDING_COLUMNS, values)},
)

FIG3 = PaperTable(
    name="fig3",
    caption="t-SNE of the learnt embeddings of BCL and BCL+RCL on CIFAR-10-LT and "
            "CIFAR-100-LT, IF 100, each on its paper's recipe (ResNet-32, 200 epochs): the "
            "report's t-SNE of the projection head's outputs with the class means marked "
            "(the runs of Table 5)",
    source="RCL (De Alvis et al.), Fig. 3",
    settings=TABLE5.settings,  # the same runs as Table 5's
    rows=(TableRow(label="BCL", plugins=("bcl",), presets=("cifar10-lt",)),
          TableRow(label="BCL+RCL", plugins=("bcl", "rcl"), presets=("cifar10-lt",))),
    columns=tuple(TableColumn(label=name, metric="test/acc",
                              settings={"dataset": dataset, "imbalance_factor": 100})
                  for name, dataset in (("CIFAR10.Lt", "cifar10-lt"),
                                        ("CIFAR100.Lt", "cifar100-lt"))),
    kind="figure", figure="projection-tsne",
)

TABLES = (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, FIG3)
