"""BCL's tables and figures as data (``ltrun reproduce bcl:table3`` ... ``bcl:supp-fig2``).

Numbers are the paper's as printed (percent). Rows of methods ltcore does not implement are
left out; docs/methods/bcl.md ("Paper tables") names them table by table.
"""

from __future__ import annotations

from ltcore import PaperTable, TableColumn, TableRow

from .plugin import CIFAR

SOURCE = "BCL (Zhu et al. 2022), {}"

SHOTS = (TableColumn(label="Many", metric="test/many"),
         TableColumn(label="Medium", metric="test/medium"),
         TableColumn(label="Few", metric="test/few"),
         TableColumn(label="All", metric="test/acc"))
"""Top-1 on the many (> 100 training images), medium (20-100) and few (< 20) classes, and
overall: ltcore's default shot groups are the paper's."""

KANG = {"views.classifier": "imagenet-standard", "epochs": 90, "batch_size": 512,
        "optim.lr": 0.2, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
        "schedule.kind": "cosine", "schedule.warmup_epochs": 0}
"""Kang et al.'s ImageNet-LT / iNaturalist joint training (90 epochs), the schedule of the
decoupling rows (tau-norm, cRT, LWS) and of the re-run CE-family rows."""

RANDAUG = {**KANG, "views.classifier": "imagenet-randaugment"}
"""Table 6's dagger rows: re-run by the BCL authors with the released code, with RandAug."""


def _numbers(rows: dict, columns) -> dict:
    return {(row, column.label): value for row, values in rows.items()
            for column, value in zip(columns, values) if value is not None}


CIFAR100_IF100 = {"dataset": "cifar100-lt", "imbalance_factor": 100}

TABLE1 = PaperTable(
    name="table1",
    caption="Class-averaging forms of L_BCL (bcl.averaging): L1 (eq. 6, averaging outside the "
            "exponential), L2 (eq. 7, inside it), L3 (eq. 8, a softmax over the prototypes); "
            "ResNet-32, CIFAR-100-LT IF 100, 200 epochs",
    source=SOURCE.format("Table 1"),
    presets=("cifar100-lt",),
    settings=CIFAR100_IF100,
    rows=tuple(TableRow(label=f"L_{i}", plugins=("bcl",), settings={"bcl.averaging": f"L{i}"})
               for i in (1, 2, 3)),
    columns=(TableColumn(label="Top-1 Acc.", metric="test/acc"),),
    numbers={("L_1", "Top-1 Acc."): 51.9, ("L_2", "Top-1 Acc."): 50.2,
             ("L_3", "Top-1 Acc."): 51.0},
)

CIFAR_COLUMNS = tuple(
    TableColumn(label=f"CIFAR-{classes}-LT IF {factor}",
                settings={"dataset": f"cifar{classes}-lt", "imbalance_factor": factor})
    for classes in (100, 10) for factor in (100, 50, 10))

TABLE3 = PaperTable(
    name="table3",
    caption="Top-1 accuracy of ResNet-32 on CIFAR-100-LT and CIFAR-10-LT, IF 100/50/10, 200 "
            "epochs; the CE-family baselines on the LDAM-DRW schedule (their presets)",
    source=SOURCE.format("Table 3"),
    rows=(TableRow(label="Focal loss", plugins=("focal",), presets=("cifar10-lt",)),
          TableRow(label="CB-Focal", plugins=("cb",), presets=("cifar10-lt",),
                   settings={"cb.loss": "focal"}),
          TableRow(label="LDAM-DRW", plugins=("ldam-drw",), presets=("cifar10-lt",)),
          TableRow(label="BCL", plugins=("bcl",), presets=("cifar10-lt",))),
    columns=CIFAR_COLUMNS,
    numbers=_numbers({
        "Focal loss": (38.41, 44.32, 55.78, 70.38, 76.72, 86.66),
        "CB-Focal": (39.60, 45.17, 57.99, 74.57, 79.27, 87.10),
        "LDAM-DRW": (42.04, 46.62, 58.71, 77.03, 81.03, 88.16),
        "BCL": (51.93, 56.59, 64.87, 84.32, 87.24, 91.12)}, CIFAR_COLUMNS),
)

PACO_SCHEDULE = {"epochs": 400, "batch_size": 128, "model.backbone": "resnet32",
                 "views.classifier": "autoaugment-cutout", "optim.lr": 0.05,
                 "optim.momentum": 0.9, "optim.weight_decay": 5e-4, "schedule.kind": "step",
                 "schedule.warmup_epochs": 10, "schedule.milestones": [321, 361]}
"""PaCo's CIFAR-100-LT 400-epoch recipe, on which PaCo's paper trained the Balanced Softmax
it reports (the double dagger of Table 4)."""

TABLE4 = PaperTable(
    name="table4",
    caption="Top-1 accuracy of ResNet-32 on CIFAR-100-LT, IF 100, by shot group, 200 and 400 "
            "epochs",
    source=SOURCE.format("Table 4"),
    settings={"dataset": "cifar100-lt", "imbalance_factor": 100},
    rows=(TableRow(label="tau-norm (200 epochs)", plugins=("ce", "tau-norm"),
                   presets=("cifar100-lt",)),
          TableRow(label="BCL (200 epochs)", plugins=("bcl",), presets=("cifar100-lt",)),
          TableRow(label="Balanced Softmax (400 epochs)", plugins=("balanced-softmax",),
                   settings=PACO_SCHEDULE),
          TableRow(label="PaCo (400 epochs)", plugins=("paco",), presets=("cifar100-lt",)),
          TableRow(label="BCL (400 epochs)", plugins=("bcl",), presets=("cifar100-lt-400",))),
    columns=SHOTS,
    numbers=_numbers({
        "tau-norm (200 epochs)": (61.4, 42.5, 15.7, 41.4),
        "BCL (200 epochs)": (67.2, 53.1, 32.9, 51.9),
        "Balanced Softmax (400 epochs)": (None, None, None, 50.8),
        "PaCo (400 epochs)": (None, None, None, 52.0),
        "BCL (400 epochs)": (69.7, 53.8, 35.5, 53.9)}, SHOTS),
)

LARGE_COLUMNS = (
    TableColumn(label="ImageNet-LT", settings={"dataset": "imagenet-lt", "epochs": 90,
                                               "optim.lr": 0.1, "optim.weight_decay": 5e-4}),
    TableColumn(label="iNaturalist 2018", settings={"dataset": "inaturalist2018", "epochs": 100,
                                                    "optim.lr": 0.2,
                                                    "optim.weight_decay": 1e-4}))
"""BCL's own schedule per dataset (sec. 4.2: its presets ``imagenet-lt-resnet50`` and
``inaturalist2018`` differ in these keys only); the decoupling rows set Kang's over it."""


def _decoupled(label: str, plugin: str) -> TableRow:
    fixed = {"tau-norm.fallback_tau": 1.0} if plugin == "tau-norm" else {}  # iNat: no val split
    return TableRow(label=label, plugins=("ce", plugin), presets=("imagenet-lt",),
                    settings={**{key: KANG[key] for key in ("epochs", "optim.lr",
                                                            "optim.weight_decay")}, **fixed})


TABLE5 = PaperTable(
    name="table5",
    caption="Top-1 accuracy of ResNet-50 on ImageNet-LT and iNaturalist 2018, up to 100 epochs",
    source=SOURCE.format("Table 5"),
    settings={"model.backbone": "resnet50"},
    rows=(_decoupled("tau-norm", "tau-norm"), _decoupled("cRT", "crt"),
          _decoupled("LWS", "lws"),
          TableRow(label="BCL", plugins=("bcl",), presets=("imagenet-lt-resnet50",))),
    columns=LARGE_COLUMNS,
    numbers=_numbers({"tau-norm": (46.7, 65.6), "cRT": (49.6, 65.2), "LWS": (49.9, 65.9),
                      "BCL": (56.0, 71.8)}, LARGE_COLUMNS),
)

TABLE6 = PaperTable(
    name="table6",
    caption="Top-1 accuracy of ResNeXt-50 on ImageNet-LT by shot group, 90 and 180 epochs",
    source=SOURCE.format("Table 6"),
    settings={"dataset": "imagenet-lt", "model.backbone": "resnext50"},
    rows=(TableRow(label="Focal Loss (90 epochs)", plugins=("focal",), settings=RANDAUG),
          TableRow(label="tau-norm (90 epochs)", plugins=("ce", "tau-norm"),
                   presets=("imagenet-lt",)),
          TableRow(label="Balanced Softmax (90 epochs)", plugins=("balanced-softmax",),
                   settings=RANDAUG),
          TableRow(label="LWS (90 epochs)", plugins=("ce", "lws"), presets=("imagenet-lt",)),
          TableRow(label="BCL (90 epochs)", plugins=("bcl",),
                   presets=("imagenet-lt-resnext50",)),
          TableRow(label="Balanced Softmax (180 epochs)", plugins=("balanced-softmax",),
                   settings={**RANDAUG, "epochs": 180}),
          TableRow(label="BCL (180 epochs)", plugins=("bcl",),
                   presets=("imagenet-lt-resnext50-180",))),
    columns=SHOTS,
    numbers=_numbers({
        "Focal Loss (90 epochs)": (64.3, 37.1, 8.2, 43.7),
        "tau-norm (90 epochs)": (59.1, 46.9, 30.7, 49.4),
        "Balanced Softmax (90 epochs)": (62.2, 48.8, 29.8, 51.4),
        "LWS (90 epochs)": (60.2, 47.2, 30.3, 49.9),
        "BCL (90 epochs)": (67.2, 53.9, 36.5, 56.7),
        "Balanced Softmax (180 epochs)": (65.8, 53.2, 34.1, 55.4),
        "BCL (180 epochs)": (67.9, 54.2, 36.6, 57.1)}, SHOTS),
)

SUPP_TABLE1 = PaperTable(
    name="supp-table1",
    caption="Prototypes: moving class means, learnable parameters or the classifier weights "
            "through an MLP (bcl.prototypes); ResNet-32, CIFAR-100-LT IF 100, 400 epochs",
    source=SOURCE.format("supplementary Table 1"),
    presets=("cifar100-lt-400",),
    settings={"dataset": "cifar100-lt", "imbalance_factor": 100},
    rows=(TableRow(label="Exponential Moving Average", plugins=("bcl",),
                   settings={"bcl.prototypes": "ema"}),
          TableRow(label="Learnable Parameters", plugins=("bcl",),
                   settings={"bcl.prototypes": "learnable"}),
          TableRow(label="Ours", plugins=("bcl",), settings={"bcl.prototypes": "classifier-mlp"})),
    columns=SHOTS,
    numbers=_numbers({"Exponential Moving Average": (69.7, 54.4, 31.9, 53.0),
                      "Learnable Parameters": (68.9, 54.0, 34.3, 53.3),
                      "Ours": (69.7, 53.8, 35.5, 53.9)}, SHOTS),
)

SUPP_TABLE2 = PaperTable(
    name="supp-table2",
    caption="Pipelines of the two contrastive views (views.contrastive, "
            "views.contrastive_second); ResNeXt-50, ImageNet-LT, 90 epochs",
    source=SOURCE.format("supplementary Table 2"),
    presets=("imagenet-lt-resnext50",),
    rows=(TableRow(label="SimAug.&SimAug.", plugins=("bcl",),
                   settings={"views.contrastive": "imagenet-simaugment"}),
          TableRow(label="RandAug.&SimAug.", plugins=("bcl",),
                   settings={"views.contrastive": "imagenet-randaugment",
                             "views.contrastive_second": "imagenet-simaugment"}),
          TableRow(label="RandAug.&RandAug.", plugins=("bcl",),
                   settings={"views.contrastive": "imagenet-randaugment"})),
    columns=SHOTS,
    numbers=_numbers({"SimAug.&SimAug.": (67.2, 53.9, 36.5, 56.7),
                      "RandAug.&SimAug.": (67.1, 54.6, 37.1, 57.1),
                      "RandAug.&RandAug.": (67.6, 54.6, 37.5, 57.3)}, SHOTS),
)

RECIPE = {key: value for key, value in CIFAR.items()
          if not key.startswith(("bcl.", "model.projection_dim"))}
"""BCL's CIFAR recipe, core keys only but the projection's width (the SCL row of
supplementary Fig. 2 trains on it)."""

EPOCHS_400 = {"epochs": 400, "schedule.warmup_epochs": 10, "schedule.milestones": [360, 380]}
EPOCHS_200 = {"epochs": 200, "schedule.warmup_epochs": 5, "schedule.milestones": [160, 180]}
LC = {**RECIPE, "la.tau": 1.0, "la.weight": 2.0}
"""The LC baseline: logit-compensated CE (``la``, tau 1) at BCL's lambda = 2 on BCL's CIFAR
recipe, without the contrastive branch."""

TABLE2 = PaperTable(
    name="table2",
    caption="Components of BCL: logit compensation (LC, the la plugin on BCL's recipe), the "
            "supervised contrastive branch (SC: bcl with class_complement and class_averaging "
            "off, SupCon's loss), class-complement (bcl.class_complement) and class-averaging "
            "(bcl.class_averaging); ResNet-32, CIFAR-100-LT IF 100, 400 epochs",
    source=SOURCE.format("Table 2"),
    settings=CIFAR100_IF100,
    rows=(TableRow(label="LC", plugins=("la",), settings={**LC, **EPOCHS_400}),
          *(TableRow(label=label, plugins=("bcl",), presets=("cifar100-lt-400",),
                     settings={"bcl.class_complement": complement,
                               "bcl.class_averaging": averaging})
            for label, complement, averaging in (
                ("LC+SC", False, False), ("LC+SC+Complement", True, False),
                ("LC+SC+Averaging", False, True), ("LC+SC+Complement+Averaging", True, True)))),
    columns=(TableColumn(label="Top-1 Acc.", metric="test/acc"),),
    numbers={(label, "Top-1 Acc."): value for label, value in (
        ("LC", 50.8), ("LC+SC", 52.4), ("LC+SC+Complement", 52.3), ("LC+SC+Averaging", 52.0),
        ("LC+SC+Complement+Averaging", 53.9))},
)

SUPP_FIG1 = PaperTable(
    name="supp-fig1",
    caption="Confusion matrices of the test predictions on CIFAR-10-LT IF 100 of cross-entropy "
            "(la with tau 0), logit compensation (la with tau 1), both at lambda = 2 on BCL's "
            "recipe without the contrastive branch, and BCL; ResNet-32, 200 epochs. Every "
            "run's stages draw their confusion matrix (plots/), ltrun report the "
            "seed-averaged ones; the table gives the top-1 beside them",
    source=SOURCE.format("supplementary Fig. 1"),
    settings={"dataset": "cifar10-lt", "imbalance_factor": 100},
    rows=(TableRow(label="CE", plugins=("la",), settings={**LC, **EPOCHS_200, "la.tau": 0.0}),
          TableRow(label="LC", plugins=("la",), settings={**LC, **EPOCHS_200}),
          TableRow(label="BCL", plugins=("bcl",), presets=("cifar10-lt",))),
    columns=(TableColumn(label="CIFAR-10-LT IF 100", metric="test/acc"),),
)

SUPP_FIG2 = PaperTable(
    name="supp-fig2",
    caption="2-D MLP features (model.projection_dim = 2) learnt by SCL and BCL on CIFAR-10-LT "
            "IF 100, ResNet-32, 200 epochs; BCL records its prototypes beside them",
    source=SOURCE.format("supplementary Fig. 2"),
    settings={"dataset": "cifar10-lt", "imbalance_factor": 100, "model.projection_dim": 2},
    rows=(TableRow(label="SCL", plugins=("supcon",),
                   settings={**RECIPE, "epochs": 200, "schedule.warmup_epochs": 5,
                             "schedule.milestones": [160, 180], "supcon.temperature": 0.1}),
          TableRow(label="BCL", plugins=("bcl",), presets=("cifar10-lt",))),
    columns=(TableColumn(label="CIFAR-10-LT IF 100"),),
    kind="figure", figure="features-2d",
)

TABLES = (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, TABLE6, SUPP_TABLE1, SUPP_TABLE2, SUPP_FIG1,
          SUPP_FIG2)
