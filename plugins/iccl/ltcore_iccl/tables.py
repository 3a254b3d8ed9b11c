"""ICCL's tables and figures as :class:`~ltcore.PaperTable` s (``ltrun reproduce iccl:<name>``).

Numbers are the paper's, as printed (top-1 accuracy, percent). Rows of methods ltcore does not
implement are left out of a table; each caption's last sentence names them.
"""

from __future__ import annotations

from ltcore import PaperTable, TableColumn, TableRow

SOURCE = "ICCL (Tiong et al.), {}"
"""The paper: *Improving tail-class representation with centroid contrastive learning*."""

IMAGENET_IMPROVED = {"batch_size": 256, "optim.lr": 0.1}
"""ICCL's "improved settings" for the decoupling baselines on ImageNet-LT (Tables 2 and 7):
batch 256, lr 0.1; the classifier stage at the original learning rate x0.1."""

IMAGENET_CE = {"dataset": "imagenet-lt", "model.backbone": "resnext50",
               "views.classifier": "imagenet-standard", "epochs": 90, "optim.momentum": 0.9,
               "optim.weight_decay": 5e-4, "schedule.kind": "cosine",
               "schedule.warmup_epochs": 0, **IMAGENET_IMPROVED}
"""Joint CE training on ImageNet-LT with ICCL's settings (Table 7's CE row, before cRT)."""

SPLITS = (("Overall", "test/acc"), ("Many", "test/many"), ("Medium", "test/medium"),
          ("Few", "test/few"))


def split_columns(prefix: str = "", **column) -> list[TableColumn]:
    """Overall / Many / Medium / Few columns of one run."""
    return [TableColumn(label=f"{prefix}{label}", metric=metric, **column)
            for label, metric in SPLITS]


def numbers(rows: dict[str, tuple], columns: list[str]) -> dict[tuple[str, str], float]:
    """``{(row, column): value}`` from printed rows; ``None`` is a dash in the paper."""
    return {(row, column): value for row, values in rows.items()
            for column, value in zip(columns, values) if value is not None}


# -- Table 1: CIFAR-LT -------------------------------------------------------------------------

CIFAR_COLUMNS = [TableColumn(label=f"CIFAR-{classes}-LT IF {factor}", metric="test/acc",
                             presets=(f"cifar{classes}-lt",),
                             settings={"dataset": f"cifar{classes}-lt",
                                       "imbalance_factor": factor})
                 for classes in (100, 10) for factor in (100, 50, 10)]

TABLE1 = PaperTable(
    name="table1",
    caption="Top-1 accuracy on CIFAR-100-LT and CIFAR-10-LT, ResNet-32, 200 epochs. CE is focal "
            "with gamma 0 on the LDAM-DRW schedule (the quoted CE numbers are LDAM-DRW's); "
            "cRT and LWS are the paper's re-implementations (dagger). Left out (not in ltcore): "
            "Manifold Mixup, CE-DRW, CE-DRS, BBN, M2m, TSC, De-confound-TDE, ResLT; logit "
            "adjustment (la has no CIFAR recipe preset) and PaCo (400 epochs, no CIFAR-10 "
            "recipe).",
    source=SOURCE.format("Table 1"),
    rows=[TableRow(label="CE", plugins=("focal",), settings={"focal.gamma": 0.0}),
          TableRow(label="Focal Loss", plugins=("focal",)),
          TableRow(label="Mixup", plugins=("mixup",)),
          TableRow(label="CB-Focal", plugins=("cb",), settings={"cb.loss": "focal"}),
          TableRow(label="LDAM-DRW", plugins=("ldam-drw",)),
          TableRow(label="cRT", plugins=("ce", "crt")),
          TableRow(label="LWS", plugins=("ce", "lws")),
          TableRow(label="KCL", plugins=("kcl", "crt")),
          TableRow(label="ICCL", plugins=("iccl",))],
    columns=CIFAR_COLUMNS,
    numbers=numbers({
        "CE": (38.3, 43.9, 55.7, 70.4, 74.8, 86.4),
        "Focal Loss": (38.4, 44.3, 55.8, 70.4, 76.7, 86.7),
        "Mixup": (39.5, 45.0, 58.0, 73.1, 77.8, 87.1),
        "CB-Focal": (39.6, 45.2, 58.0, 74.6, 79.3, 87.1),
        "LDAM-DRW": (42.0, 46.6, 58.7, 77.0, 81.0, 88.2),
        "cRT": (42.3, 46.8, 58.1, 75.7, 80.4, 88.3),
        "LWS": (42.3, 46.4, 58.1, 73.0, 78.5, 87.7),
        "KCL": (42.8, 46.3, 57.6, 77.6, 81.7, 88.0),
        "ICCL": (46.6, 51.6, 62.1, 82.1, 84.7, 89.7),
    }, [c.label for c in CIFAR_COLUMNS]),
)

# -- Table 2: ImageNet-LT ----------------------------------------------------------------------

IMAGENET_SPLITS = split_columns()
CRT_IMPROVED = {**IMAGENET_IMPROVED, "crt.lr": 0.01}
LWS_IMPROVED = {**IMAGENET_IMPROVED, "lws.lr": 0.01}

TABLE2 = PaperTable(
    name="table2",
    caption="Top-1 accuracy on ImageNet-LT, ResNeXt-50, 90 epochs. tau-norm, cRT and LWS on "
            "Kang et al.'s recipe; the dagger rows on ICCL's improved settings (batch 256, lr "
            "0.1, classifier stage at lr x0.1). Left out (not in ltcore): OLTR, NCM, "
            "De-confound-TDE, ResLT, DisAlign; focal loss and PaCo (no ImageNet-LT recipe "
            "preset).",
    source=SOURCE.format("Table 2"),
    presets=("imagenet-lt",),
    rows=[TableRow(label="tau-norm", plugins=("ce", "tau-norm")),
          TableRow(label="cRT", plugins=("ce", "crt")),
          TableRow(label="LWS", plugins=("ce", "lws")),
          TableRow(label="cRT (improved)", plugins=("ce", "crt"), settings=CRT_IMPROVED),
          TableRow(label="LWS (improved)", plugins=("ce", "lws"), settings=LWS_IMPROVED),
          TableRow(label="ICCL", plugins=("iccl",))],
    columns=IMAGENET_SPLITS,
    numbers=numbers({
        "tau-norm": (49.4, 59.1, 46.9, 30.7),
        "cRT": (49.6, 61.8, 46.2, 27.4),
        "LWS": (49.9, 60.2, 47.2, 30.3),
        "cRT (improved)": (52.4, 64.3, 49.1, 30.7),
        "LWS (improved)": (52.5, 63.0, 49.6, 32.8),
        "ICCL": (54.0, 60.7, 52.9, 39.0),
    }, [c.label for c in IMAGENET_SPLITS]),
)

# -- Table 3: iNaturalist 2018 -----------------------------------------------------------------

INAT_COLUMNS = (split_columns("90 epochs ", presets=("inaturalist2018",))
                + split_columns("200 epochs ", presets=("inaturalist2018-200",)))

TABLE3 = PaperTable(
    name="table3",
    caption="Top-1 accuracy on iNaturalist 2018, ResNet-50, 90 and 200 epochs. Left out: CB-Focal, "
            "CE-DRS, CE-DRW, LDAM-DRW, NCM, cRT, tau-norm, LWS, logit adjustment (their plugins "
            "have no iNaturalist recipe preset), BBN, KCL, DisAlign, TSC, ResLT, PaCo.",
    source=SOURCE.format("Table 3"),
    rows=[TableRow(label="ICCL", plugins=("iccl",))],
    columns=INAT_COLUMNS,
    numbers=numbers({"ICCL": (70.5, 67.6, 70.2, 71.6, 72.5, 72.1, 72.3, 72.9)},
                    [c.label for c in INAT_COLUMNS]),
)

# -- Table 4: loss components (ImageNet-LT) ----------------------------------------------------

NO_WARMUP = {"iccl.warmup_epochs": 0}
WITHOUT_CE = {"iccl.uniform_weight": 0.0}
WITHOUT_CE_IT = {"iccl.interpolative_ce_weight": 0.0}
WITHOUT_CC_IT = {"iccl.interpolative_centroid_weight": 0.0}
ABLATION_COLUMNS = [TableColumn(label="Overall", metric="test/acc"),
                    TableColumn(label="Head", metric="test/many"),
                    TableColumn(label="Tail", metric="test/iccl-tail")]

TABLE4 = PaperTable(
    name="table4",
    caption="Loss components of ICCL on ImageNet-LT, ResNeXt-50, each followed by ICCL's "
            "classifier rebalancing. Head = many (> 100 images), Tail = medium and few "
            "(metric iccl-tail). A missing L_ce is w_u = 0, a missing interpolative term has "
            "weight 0 (iccl.interpolative_ce_weight / interpolative_centroid_weight), no warm-up "
            "is T = 0. L_ce^it alone is the paper's Mixup.",
    source=SOURCE.format("Table 4"),
    presets=("imagenet-lt",),
    settings={"eval.metrics": ["iccl-tail"]},
    rows=[TableRow(label="L_ce", plugins=("iccl",),
                   settings={**NO_WARMUP, **WITHOUT_CE_IT, **WITHOUT_CC_IT}),
          TableRow(label="L_ce^it", plugins=("iccl",),
                   settings={**NO_WARMUP, **WITHOUT_CE, **WITHOUT_CC_IT}),
          TableRow(label="L_ce^it + warm-up", plugins=("iccl",),
                   settings={**WITHOUT_CE, **WITHOUT_CC_IT}),
          TableRow(label="L_ce + L_cc^it + warm-up", plugins=("iccl",), settings=WITHOUT_CE_IT),
          TableRow(label="L_ce + L_ce^it + warm-up", plugins=("iccl",), settings=WITHOUT_CC_IT),
          TableRow(label="L_ce + L_ce^it + L_cc^it", plugins=("iccl",), settings=NO_WARMUP),
          TableRow(label="L_ce + L_ce^it + L_cc^it + warm-up", plugins=("iccl",))],
    columns=ABLATION_COLUMNS,
    numbers=numbers({
        "L_ce": (51.3, 60.6, 45.5),
        "L_ce^it": (51.6, 58.3, 47.4),
        "L_ce^it + warm-up": (51.7, 57.9, 47.9),
        "L_ce + L_cc^it + warm-up": (52.4, 59.9, 47.7),
        "L_ce + L_ce^it + warm-up": (53.4, 61.1, 48.6),
        "L_ce + L_ce^it + L_cc^it": (53.6, 61.2, 48.8),
        "L_ce + L_ce^it + L_cc^it + warm-up": (54.0, 60.7, 49.8),
    }, [c.label for c in ABLATION_COLUMNS]),
)

# -- Table 5: lambda ~ Beta(a, b) (CIFAR-100-LT) -----------------------------------------------

BETAS = ((0.2, 1.0), (0.2, 0.2), (1.0, 1.0), (2.0, 2.0))

TABLE5 = PaperTable(
    name="table5",
    caption="Interpolation weight lambda ~ Beta(a, b) on CIFAR-100-LT IF 100, ResNet-32. The "
            "rows are the distributions the text names; the paper's accuracies of this table "
            "are not in its text, so no paper number is given.",
    source=SOURCE.format("Table 5"),
    presets=("cifar100-lt",),
    rows=[TableRow(label=f"Beta({a}, {b})", plugins=("iccl",),
                   settings={"iccl.beta_a": a, "iccl.beta_b": b}) for a, b in BETAS],
    columns=[TableColumn(label="CIFAR-100-LT IF 100", metric="test/acc",
                         settings={"dataset": "cifar100-lt", "imbalance_factor": 100})],
)

# -- Table 6: the sampler of x^t ---------------------------------------------------------------

SAMPLER_COLUMNS = [
    TableColumn(label="CIFAR-100-LT", presets=("cifar100-lt",)),
    TableColumn(label="CIFAR-10-LT", presets=("cifar10-lt",)),
    TableColumn(label="ImageNet-LT", presets=("imagenet-lt",)),
    TableColumn(label="iNaturalist", presets=("inaturalist2018",)),
]

TABLE6 = PaperTable(
    name="table6",
    caption="Sampler of the interpolative branch's second image x^t: class-agnostic uniform "
            "over the images (iccl.tail_sampler=uniform) or class-aware with gamma (eq. 2). "
            "CIFAR at IF 100, ResNet-32; ImageNet-LT ResNeXt-50; iNaturalist ResNet-50, 90 "
            "epochs.",
    source=SOURCE.format("Table 6"),
    rows=[TableRow(label="Uniform", plugins=("iccl",), settings={"iccl.tail_sampler": "uniform"}),
          *[TableRow(label=f"gamma = {g}", plugins=("iccl",), settings={"iccl.gamma": g})
            for g in (0.0, 0.5, 1.0)]],
    columns=SAMPLER_COLUMNS,
    numbers=numbers({
        "Uniform": (44.7, 79.9, 52.8, 69.4),
        "gamma = 0.0": (46.6, 82.1, 54.0, 70.5),
        "gamma = 0.5": (46.2, 81.6, 54.1, 70.2),
        "gamma = 1.0": (46.2, 81.1, 53.1, 70.1),
    }, [c.label for c in SAMPLER_COLUMNS]),
)

# -- Table 7: classifier rebalancing (ImageNet-LT) ---------------------------------------------

MIXUP_AS_ICCL = {"iccl.warmup_epochs": 0, "iccl.uniform_weight": 0.0,
                 "iccl.interpolative_centroid_weight": 0.0}

TABLE7 = PaperTable(
    name="table7",
    caption="Classifier rebalancing on ImageNet-LT, ResNeXt-50, 90 epochs. Before "
            "rebalancing: CE (joint training on ICCL's settings), mixup (Zhang et al.) and ICCL "
            "without its stage 2. After: CE with cRT (ICCL's improved settings), and ICCL's "
            "rebalancing after mixup and after ICCL; the rebalanced mixup is the paper's "
            "'L_ce^it only' of Table 4 (same numbers), since the core's mixup would also mix "
            "a cRT stage.",
    source=SOURCE.format("Table 7"),
    rows=[TableRow(label="CE", plugins=("ce",), settings=IMAGENET_CE),
          TableRow(label="Mixup", plugins=("mixup",), presets=("imagenet-lt",)),
          TableRow(label="ICCL", plugins=("iccl",), presets=("imagenet-lt",),
                   settings={"iccl.classifier_epochs": 0}),
          TableRow(label="CE, rebalanced", plugins=("ce", "crt"), presets=("imagenet-lt",),
                   settings=CRT_IMPROVED),
          TableRow(label="Mixup, rebalanced", plugins=("iccl",), presets=("imagenet-lt",),
                   settings=MIXUP_AS_ICCL),
          TableRow(label="ICCL, rebalanced", plugins=("iccl",), presets=("imagenet-lt",))],
    columns=IMAGENET_SPLITS,
    numbers=numbers({
        "CE": (46.7, 68.1, 40.2, 9.0),
        "Mixup": (49.5, 64.1, 44.8, 24.4),
        "ICCL": (50.5, 68.5, 44.4, 20.8),
        "CE, rebalanced": (52.4, 64.3, 49.1, 30.7),
        "Mixup, rebalanced": (51.6, 58.3, 50.5, 36.5),
        "ICCL, rebalanced": (54.0, 60.7, 52.9, 39.0),
    }, [c.label for c in IMAGENET_SPLITS]),
)

# -- Table 8: classifier rebalancing parameters -----------------------------------------------

CE_AS_ICCL = {"iccl.warmup_epochs": 90, "iccl.warmup_centroid_weight": 0.0,
              "iccl.reset_classifier": True}
"""ICCL's run reduced to cRT (Table 8's cRT column): the warm-up lasts the whole train stage and
its centroid loss has weight 0, so stage 1 is joint CE on ICCL's improved settings; stage 2
re-initialises the classifier, as cRT does, and re-trains it with gamma' and w_d."""

REBALANCING_COLUMNS = [
    TableColumn(label="CIFAR-100-LT ICCL", presets=("cifar100-lt",)),
    TableColumn(label="CIFAR-10-LT ICCL", presets=("cifar10-lt",)),
    TableColumn(label="iNaturalist ICCL", presets=("inaturalist2018",)),
    TableColumn(label="ImageNet-LT ICCL", presets=("imagenet-lt",)),
    TableColumn(label="ImageNet-LT cRT", presets=("imagenet-lt",), settings=CE_AS_ICCL),
]

TABLE8 = PaperTable(
    name="table8",
    caption="Classifier rebalancing parameters: the sampler's gamma' (iccl.classifier_gamma; 0 "
            "class-balanced, 1 reverse) and the distillation weight w_d (iccl.distill_weight). "
            "CIFAR at IF 100, ResNet-32; iNaturalist ResNet-50, 90 epochs; ImageNet-LT "
            "ResNeXt-50. The cRT column is CE on ICCL's improved settings followed by the same "
            "stage 2 with a re-initialised classifier.",
    source=SOURCE.format("Table 8"),
    # gamma' = 1 and w_d = 0.5 are ICCL's defaults, set only where a row changes them: the last
    # two rows are then the very runs of Table 10 (and the last one Table 9's ICCL)
    rows=[*[TableRow(label=f"gamma' = 0, w_d = {w:g}", plugins=("iccl",),
                     settings={"iccl.classifier_gamma": 0.0, "iccl.distill_weight": w})
            for w in (0.0, 0.5)],
          TableRow(label="gamma' = 1, w_d = 0", plugins=("iccl",),
                   settings={"iccl.distill_weight": 0.0}),
          TableRow(label="gamma' = 1, w_d = 0.5", plugins=("iccl",))],
    columns=REBALANCING_COLUMNS,
    numbers=numbers({
        "gamma' = 0, w_d = 0": (45.3, 77.5, 69.5, 53.7, 52.4),
        "gamma' = 0, w_d = 0.5": (45.0, 77.6, 69.5, 53.2, 52.2),
        "gamma' = 1, w_d = 0": (47.1, 82.3, 70.2, 53.6, 49.6),
        "gamma' = 1, w_d = 0.5": (46.6, 82.1, 70.5, 54.0, 51.3),
    }, [c.label for c in REBALANCING_COLUMNS]),
)

# -- Table 9: alternative rebalancing ----------------------------------------------------------

TABLE9_COLUMNS = [TableColumn(label=c.label.removesuffix(" ICCL"), presets=c.presets)
                  for c in REBALANCING_COLUMNS[:4]]

TABLE9 = PaperTable(
    name="table9",
    caption="ICCL's classifier rebalancing against naive class-balanced sampling (stage 2 with "
            "gamma' = 0 and no distillation) and post-hoc logit adjustment (no stage 2; "
            "eval.posthoc_la_tau = 1 on the stage-1 model) after ICCL's representation "
            "learning. CIFAR at IF 100, ResNet-32; iNaturalist ResNet-50, 90 epochs; "
            "ImageNet-LT ResNeXt-50.",
    source=SOURCE.format("Table 9"),
    rows=[TableRow(label="Balanced sampling", plugins=("iccl",),
                   settings={"iccl.classifier_gamma": 0.0, "iccl.distill_weight": 0.0}),
          TableRow(label="Logit adjustment", plugins=("iccl",),
                   settings={"iccl.classifier_epochs": 0, "eval.posthoc_la_tau": 1.0}),
          TableRow(label="ICCL", plugins=("iccl",))],
    columns=TABLE9_COLUMNS,
    numbers=numbers({
        "Balanced sampling": (45.3, 77.5, 69.5, 53.7),
        "Logit adjustment": (43.4, 76.2, 69.7, 53.7),
        "ICCL": (46.6, 82.1, 70.5, 54.0),
    }, [c.label for c in TABLE9_COLUMNS]),
)

# -- Table 10: the distillation loss -----------------------------------------------------------

DISTILL_COLUMNS = (split_columns("ImageNet-LT ", presets=("imagenet-lt",))
                   + split_columns("iNaturalist ", presets=("inaturalist2018",)))

TABLE10 = PaperTable(
    name="table10",
    caption="Distillation loss of the rebalancing stage (eq. 9) on/off (iccl.distill_weight 0 "
            "or 0.5), by class split: ImageNet-LT ResNeXt-50, iNaturalist 2018 ResNet-50, 90 "
            "epochs.",
    source=SOURCE.format("Table 10"),
    rows=[TableRow(label="Without distillation", plugins=("iccl",),
                   settings={"iccl.distill_weight": 0.0}),
          TableRow(label="With distillation", plugins=("iccl",))],
    columns=DISTILL_COLUMNS,
    numbers=numbers({
        "Without distillation": (53.6, 57.5, 53.5, 43.1, 70.2, 57.5, 70.7, 72.9),
        "With distillation": (54.0, 60.7, 52.9, 39.0, 70.5, 67.6, 70.2, 71.6),
    }, [c.label for c in DISTILL_COLUMNS]),
)

# -- figures -----------------------------------------------------------------------------------

FIG2 = PaperTable(
    name="fig2",
    kind="figure",
    figure="weight-norms",
    caption="Per-class L2 norms of the classifier weights of ICCL and cRT after representation "
            "learning and after classifier rebalancing, and the norms of ICCL's class "
            "centroids, on ImageNet-LT (ResNeXt-50; cRT on ICCL's improved settings).",
    source=SOURCE.format("Fig. 2"),
    presets=("imagenet-lt",),
    rows=[TableRow(label="ICCL", plugins=("iccl",)),
          TableRow(label="cRT", plugins=("ce", "crt"), settings=CRT_IMPROVED)],
    columns=[TableColumn(label="ImageNet-LT", metric="test/acc")],
)

FIG3 = PaperTable(
    name="fig3",
    kind="figure",
    figure="projection-tsne",
    caption="t-SNE of ICCL's projected embeddings with the class centroids on CIFAR-10-LT at "
            "imbalance factors 100, 50 and 10 (ResNet-32).",
    source=SOURCE.format("Fig. 3"),
    presets=("cifar10-lt",),
    rows=[TableRow(label="ICCL", plugins=("iccl",))],
    columns=[TableColumn(label=f"CIFAR-10-LT IF {factor}", metric="test/acc",
                         settings={"dataset": "cifar10-lt", "imbalance_factor": factor})
             for factor in (100, 50, 10)],
)

TAU_D = (1.0, 2.0, 5.0, 10.0, 20.0)
"""Fig. 4's distillation temperatures: the text gives no values (the figure's axis is not in
it); the sweep brackets the paper's tau_d = 10."""

FIG4 = PaperTable(
    name="fig4",
    caption="Accuracy against the distillation temperature tau_d (iccl.distill_temperature) on "
            "ImageNet-LT, ResNeXt-50, overall and per split; a line plot of the table (no "
            "report plot draws it). The figure's points are not in the paper's text, so no "
            "paper number is given.",
    source=SOURCE.format("Fig. 4"),
    presets=("imagenet-lt",),
    rows=[TableRow(label=f"tau_d = {t:g}", plugins=("iccl",),
                   settings={"iccl.distill_temperature": t}) for t in TAU_D],
    columns=IMAGENET_SPLITS,
)

TABLES = [TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, TABLE6, TABLE7, TABLE8, TABLE9, TABLE10,
          FIG2, FIG3, FIG4]
