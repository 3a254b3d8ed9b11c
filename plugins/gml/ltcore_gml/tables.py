"""GML's tables and figures as data (``ltrun reproduce gml:table1`` ... ``gml:fig3``).

Numbers are the paper's as printed (percent). Rows of methods ltcore does not implement are
left out; docs/methods/gml.md ("Reproducing the paper") names them table by table. Table 4
(CLIP backbones), Table 8 and Figure 2 (semantic segmentation) are listed with what they wait
for; Figure 1 is an illustration of the method and not a result.
"""

from __future__ import annotations

from ltcore import PaperTable, TableColumn, TableRow

SOURCE = "GML (Suh & Seo, ICML 2023), {}"

KANG = {"views.classifier": "imagenet-standard", "epochs": 90, "batch_size": 512,
        "optim.lr": 0.2, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
        "schedule.kind": "cosine", "schedule.warmup_epochs": 0}
"""Kang et al.'s 90-epoch joint training, the schedule of the CE-family and decoupling rows."""

ACC = (TableColumn(label="Accuracy", metric="test/acc"),)

SHOTS = (TableColumn(label="All", metric="test/acc"),
         TableColumn(label="Many", metric="test/many"),
         TableColumn(label="Med.", metric="test/medium"),
         TableColumn(label="Few", metric="test/few"))


def _numbers(rows: dict, columns) -> dict:
    return {(row, column.label): value for row, values in rows.items()
            for column, value in zip(columns, values) if value is not None}


TABLE1 = PaperTable(
    name="table1",
    caption="Top-1 on ImageNet-LT, ResNeXt-50 (many / medium / few shots); left out: BALMS, "
            "LADE, DisAlign, PaCo (not in ltcore for ImageNet-LT)",
    source=SOURCE.format("Table 1"),
    settings={"dataset": "imagenet-lt", "model.backbone": "resnext50"},
    rows=(TableRow(label="Focal Loss (90)", plugins=("focal",), settings=KANG),
          TableRow(label="tau-norm (90)", plugins=("ce", "tau-norm"), presets=("imagenet-lt",)),
          TableRow(label="LWS (90)", plugins=("ce", "lws"), presets=("imagenet-lt",)),
          TableRow(label="BCL (90)", plugins=("bcl",), presets=("imagenet-lt-resnext50",)),
          TableRow(label="Proposed (90)", plugins=("gml",), presets=("imagenet-lt",)),
          TableRow(label="Proposed (400)", plugins=("gml",), presets=("imagenet-lt-400",))),
    columns=SHOTS,
    numbers=_numbers({
        "Focal Loss (90)": (43.7, 64.3, 37.1, 8.2),
        "tau-norm (90)": (49.4, 59.1, 46.9, 30.7),
        "LWS (90)": (49.9, 60.2, 47.2, 30.3),
        "BCL (90)": (56.7, 67.2, 53.9, 36.5),
        "Proposed (90)": (58.3, 68.7, 55.7, 38.6),
        "Proposed (400)": (58.8, 68.2, 56.7, 39.5)}, SHOTS),
)

TABLE2 = PaperTable(
    name="table2",
    caption="Top-1 on iNaturalist 2018, ResNet-50; left out: Hybrid-SC, SSP, KCL, DisAlign, "
            "RIDE, tau-norm (400), PaCo (no iNaturalist recipe in ltcore)",
    source=SOURCE.format("Table 2"),
    settings={"dataset": "inaturalist2018", "model.backbone": "resnet50"},
    rows=(TableRow(label="tau-norm (100)", plugins=("ce", "tau-norm"), presets=("imagenet-lt",),
                   settings={"epochs": 100, "tau-norm.fallback_tau": 1.0}),
          TableRow(label="BCL (100)", plugins=("bcl",), presets=("inaturalist2018",)),
          TableRow(label="Proposed (100)", plugins=("gml",), presets=("inaturalist2018",)),
          TableRow(label="Balanced Softmax (400)", plugins=("balanced-softmax",),
                   settings={**KANG, "epochs": 400}),
          TableRow(label="Proposed (400)", plugins=("gml",), presets=("inaturalist2018-400",))),
    columns=ACC,
    numbers=_numbers({"tau-norm (100)": (65.6,), "BCL (100)": (71.8,),
                      "Proposed (100)": (73.1,), "Balanced Softmax (400)": (71.8,),
                      "Proposed (400)": (74.5,)}, ACC),
)

CIFAR100 = tuple(TableColumn(label=f"IF {f}", settings={"dataset": "cifar100-lt",
                                                         "imbalance_factor": f})
                 for f in (100, 50, 10))

TABLE3 = PaperTable(
    name="table3",
    caption="Top-1 on CIFAR-100-LT, ResNet-32, IF 100/50/10; CE-family rows on the LDAM-DRW "
            "schedule (their presets); left out: BBN, SSP, Causal model, Hybrid-SC, "
            "MetaSAug-LDAM, ResLT, MiSLAS, Balanced Softmax (400)",
    source=SOURCE.format("Table 3"),
    rows=(TableRow(label="Focal loss (200)", plugins=("focal",), presets=("cifar100-lt",)),
          TableRow(label="CB-Focal (200)", plugins=("cb",), presets=("cifar100-lt",),
                   settings={"cb.loss": "focal"}),
          TableRow(label="LDAM-DRW (200)", plugins=("ldam-drw",), presets=("cifar100-lt",)),
          TableRow(label="BCL (200)", plugins=("bcl",), presets=("cifar100-lt",)),
          TableRow(label="Proposed (200)", plugins=("gml",), presets=("cifar100-lt",)),
          TableRow(label="PaCo (400)", plugins=("paco",), presets=("cifar100-lt",)),
          TableRow(label="Proposed (400)", plugins=("gml",), presets=("cifar100-lt-400",))),
    columns=CIFAR100,
    numbers=_numbers({
        "Focal loss (200)": (38.4, 44.3, 55.8), "CB-Focal (200)": (39.6, 45.2, 58.0),
        "LDAM-DRW (200)": (42.0, 46.6, 58.7), "BCL (200)": (51.9, 56.6, 64.9),
        "Proposed (200)": (53.0, 57.6, 65.7), "PaCo (400)": (52.0, 56.0, 64.2),
        "Proposed (400)": (54.0, 58.1, 67.0)}, CIFAR100),
)

TABLE5 = PaperTable(
    name="table5",
    caption="Ablation on ImageNet-LT, ResNeXt-50, 90 epochs: without teacher-student the keys "
            "come from a momentum copy of the student (reference code without a teacher)",
    source=SOURCE.format("Table 5"),
    presets=("imagenet-lt",),
    rows=(TableRow(label="no teacher-student, no proposed loss", plugins=("gml",),
                   settings={"gml.key_encoder": "momentum", "gml.gml_weight": 0.0}),
          TableRow(label="no teacher-student, proposed loss", plugins=("gml",),
                   settings={"gml.key_encoder": "momentum"}),
          TableRow(label="teacher-student, proposed loss", plugins=("gml",))),
    columns=ACC,
    numbers=_numbers({"no teacher-student, no proposed loss": (55.4,),
                      "no teacher-student, proposed loss": (56.0,),
                      "teacher-student, proposed loss": (58.3,)}, ACC),
)

CIFAR10 = tuple(TableColumn(label=f"IF {f}", settings={
    "dataset": "cifar10-lt", "imbalance_factor": "natural" if f == 1 else f})
    for f in (1, 10, 50, 100))

LINEAR = {"crt.epochs": 100, "crt.sampler": "instance-balanced", "crt.lr": 0.1}
"""Table 6's second stage (sec. A.2): a linear classifier 100 epochs on the frozen encoder, as
SupCon's ``main_linear.py`` (instance-balanced batches, lr 0.1 cosine): a ``crt`` stage."""

TABLE6 = PaperTable(
    name="table6",
    caption="Top-1 on CIFAR-10-LT with ResNet-50 (SupCon's CIFAR variant), IF 1/10/50/100, "
            "against SupCon. As sec. A.2 trains them: the encoder 1000 epochs with the "
            "contrastive loss alone (SupCon: la.weight = 0; GML: gml.classifier_weight = 0, no "
            "distillation), then a linear classifier 100 epochs on the frozen encoder (a crt "
            "stage); cross-entropy on SupCon's main_ce.py recipe (500 epochs, batch 1024, lr "
            "0.8 cosine)",
    source=SOURCE.format("Table 6"),
    settings={"model.backbone": "resnet50-cifar"},
    rows=(TableRow(label="Cross-Entropy", plugins=("ce",),
                   settings={"epochs": 500, "batch_size": 1024, "optim.lr": 0.8,
                             "schedule.kind": "cosine"}),
          TableRow(label="SupCon", plugins=("la", "supcon", "crt"),
                   settings={"la.weight": 0.0, "la.tau": 0.0, "epochs": 1000,
                             "batch_size": 1024, "optim.lr": 0.5, "schedule.kind": "cosine",
                             "supcon.temperature": 0.1, **LINEAR}),
          TableRow(label="Proposed", plugins=("gml", "crt"), presets=("cifar10-lt",),
                   settings={"gml.classifier_weight": 0.0, "gml.distill": False,
                             "epochs": 1000, **LINEAR})),
    columns=CIFAR10,
    numbers={**{("Cross-Entropy", c.label): n for c, n in zip(CIFAR10, (94.8, 88.4, 69.1, 64.1))},
             **{("SupCon", c.label): n for c, n in zip(CIFAR10, (96.0, 94.0, 88.1, 82.7))},
             **{("Proposed", c.label): n for c, n in zip(CIFAR10, (95.9, 94.5, 90.6, 86.7))}},
)

TABLE7_COLUMNS = (TableColumn(label="CIFAR-100", presets=("table7-cifar100",)),
                  TableColumn(label="ImageNet", presets=("table7-imagenet",)),
                  TableColumn(label="CIFAR-100-LT", presets=("table7-cifar100-lt",)),
                  TableColumn(label="ImageNet-LT", presets=("table7-imagenet-lt",)))

TABLE7 = PaperTable(
    name="table7",
    caption="Against distillation: balanced CIFAR-100 / ImageNet and CIFAR-100-LT / "
            "ImageNet-LT; students ResNet-20 / ResNet-18 / ResNeXt-50, teachers ResNet-56 / "
            "ResNet-34 / ResNeXt-101; None = CE alone, KD = Hinton's (CE 0.1, KD 0.9, T 4), "
            "both on CRD's recipe (crd plugin)",
    source=SOURCE.format("Table 7"),
    rows=(TableRow(label="None", plugins=("crd",), settings={"crd.weight": 0.0}),
          TableRow(label="KD", plugins=("crd",), settings={
              "crd.weight": 0.0, "crd.ce_weight": 0.1, "crd.kd_weight": 0.9}),
          TableRow(label="CRD", plugins=("crd",)),
          TableRow(label="Proposed", plugins=("gml",))),
    columns=TABLE7_COLUMNS,
    numbers=_numbers({"None": (69.1, 69.8, 48.6, 56.3), "KD": (70.7, 70.7, 49.9, 56.5),
                      "CRD": (71.2, 71.2, 50.6, 57.2), "Proposed": (71.4, 71.1, 51.2, 58.3)},
                     TABLE7_COLUMNS),
)

TABLE_A1 = PaperTable(
    name="table-a1",
    caption="The hyper-parameters of Table A.1 as the presets of Tables 1-3, with the top-1 "
            "those tables print for them",
    source=SOURCE.format("Table A.1"),
    rows=tuple(TableRow(label=label, plugins=("gml",), presets=(preset,)) for label, preset in (
        ("Table 1 (a)", "imagenet-lt"), ("Table 1 (b)", "imagenet-lt-400"),
        ("Table 2 (a)", "inaturalist2018"), ("Table 2 (b)", "inaturalist2018-400"),
        ("Table 3 (a)", "cifar100-lt"), ("Table 3 (b)", "cifar100-lt-400"))),
    columns=ACC,
    numbers=_numbers({"Table 1 (a)": (58.3,), "Table 1 (b)": (58.8,), "Table 2 (a)": (73.1,),
                      "Table 2 (b)": (74.5,), "Table 3 (a)": (53.0,), "Table 3 (b)": (54.0,)},
                     ACC),
)

TEACHERS = (("ResNet-34", "resnet34", 58.0), ("ResNet-50", "resnet50", 58.1),
            ("ResNeXt-50", "resnext50", 58.1), ("ResNeXt-101", "resnext101", 58.2))

TABLE_A2 = PaperTable(
    name="table-a2",
    caption="ResNeXt-50 student on ImageNet-LT, 90 epochs, by teacher backbone (student top-1; "
            "the teacher's own accuracy, 50.3 / 55.2 / 56.4 / 57.9, is its stage's figure)",
    source=SOURCE.format("Table A.2"),
    presets=("imagenet-lt",),
    rows=tuple(TableRow(label=f"teacher {label}", plugins=("gml",),
                        settings={"gml.teacher_backbone": name}) for label, name, _ in TEACHERS),
    columns=(TableColumn(label="Student accuracy", metric="test/acc"),),
    numbers={(f"teacher {label}", "Student accuracy"): n for label, _, n in TEACHERS},
)

CLIP_RN50 = {"model.backbone": "clip:RN50", "model.pretrained": "hub"}
"""The CLIP-initialised ResNet-50 of Table 4's decoupling rows (OpenAI's weights)."""

CLIP_ROWS = (("ImageNet-LT, cRT (ResNet-50)", ("ce", "crt"), "imagenet-lt", CLIP_RN50, 50.8),
             ("ImageNet-LT, tau-norm (ResNet-50)", ("ce", "tau-norm"), "imagenet-lt", CLIP_RN50,
              51.2),
             ("ImageNet-LT, LWS (ResNet-50)", ("ce", "lws"), "imagenet-lt", CLIP_RN50, 51.5),
             ("ImageNet-LT, Proposed (ResNet-50)", ("gml",), "imagenet-lt-clip-rn50", {}, 70.9),
             ("ImageNet-LT, Proposed (ViT-B)", ("gml",), "imagenet-lt-clip-vitb16", {}, 78.0),
             ("iNaturalist 2018, Proposed (ViT-B)", ("gml",), "inaturalist2018-clip-vitb16", {},
              82.1))

TABLE4 = PaperTable(
    name="table4",
    caption="Top-1 with backbones initialised from CLIP: the text-centre variant (sec. 3.4) on "
            "VL-LTR's settings (the *-clip-* presets; 384 px for iNaturalist 2018) and cRT / "
            "tau-norm / LWS on Kang et al.'s recipe from the CLIP ResNet-50; left out: NCM, "
            "VL-LTR (not in ltcore), zero-shot CLIP 59.8 (ltrun evaluate --zero-shot, no "
            "training run); the runs need CLIP's OpenAI weights in open_clip's download cache",
    source=SOURCE.format("Table 4"),
    rows=tuple(TableRow(label=label, plugins=plugins, presets=(preset,), settings=settings)
               for label, plugins, preset, settings, _ in CLIP_ROWS),
    columns=ACC,
    numbers={(label, "Accuracy"): n for label, _, _, _, n in CLIP_ROWS},
)

SEG_COLUMNS = (TableColumn(label="mIoU", metric="test/mIoU"),
               TableColumn(label="mAcc", metric="test/mAcc"))


def _seg_row(alpha: float) -> TableRow:
    """GML's dense form at ``alpha`` (in L_GML and L_cls) with --plugin seg (ltcore-seg)."""
    return TableRow(label=f"Proposed (alpha = {alpha:.1f})", plugins=("seg", "gml"),
                    settings={"gml.gml_alpha": alpha, "gml.classifier_la_tau": alpha})


TABLE8 = PaperTable(
    name="table8",
    caption="Semantic segmentation on ADE20K, FCN with ResNet-50, 160k iterations (plugin seg, "
            "ltcore-seg): the cross-entropy loss replaced by the proposed one at two "
            "logit-adjustment strengths alpha (eq. 10); mIoU and mAcc (per-class means) on the "
            "validation images",
    source=SOURCE.format("Table 8"),
    presets=("ade20k-fcn-r50",),
    rows=(TableRow(label="Cross-Entropy", plugins=("seg",)), _seg_row(0.2), _seg_row(1.0)),
    columns=SEG_COLUMNS,
    numbers={("Cross-Entropy", "mIoU"): 36.1, ("Cross-Entropy", "mAcc"): 45.4,
             ("Proposed (alpha = 0.2)", "mIoU"): 38.1, ("Proposed (alpha = 0.2)", "mAcc"): 51.4,
             ("Proposed (alpha = 1.0)", "mIoU"): 31.7, ("Proposed (alpha = 1.0)", "mAcc"): 59.8},
)

FIG2_ALPHAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""Figure 2's alphas: the text gives only Table 8's 0.2 and 1.0 (the figure's axis is not in
it); the sweep spans 0 to 1 around them."""

FIG2 = PaperTable(
    name="fig2",
    caption="mIoU and mAcc on ADE20K (Table 8's setting) against alpha of eq. 10. The "
            "figure's points are not in the paper's text, so no paper number is given (Table 8 "
            "prints alpha 0.2 and 1.0)",
    source=SOURCE.format("Figure 2"),
    presets=("ade20k-fcn-r50",),
    rows=tuple(_seg_row(alpha) for alpha in FIG2_ALPHAS),
    columns=SEG_COLUMNS,
    kind="figure",
    figure="against-setting",
    axis="gml.gml_alpha",
)

FIG3 = PaperTable(
    name="fig3",
    caption="tau_g learned vs fixed at Table A.1's 0.07, ImageNet-LT, ResNeXt-50, 90 epochs "
            "(Table 1 (a)): top-1 (sec. 4.8) and tau_g, the train stage's "
            "train/gml_temperature per epoch (the figure's curve; no report plot draws a "
            "single learned temperature, so the column shows its mean over the epochs)",
    source=SOURCE.format("Figure 3 and sec. 4.8"),
    presets=("imagenet-lt",),
    rows=(TableRow(label="learned tau_g", plugins=("gml",)),
          TableRow(label="fixed tau_g = 0.07", plugins=("gml",),
                   settings={"gml.learn_temperature": False})),
    columns=(TableColumn(label="Accuracy", metric="test/acc"),
             TableColumn(label="tau_g", metric="train/gml_temperature")),
    numbers={("learned tau_g", "Accuracy"): 58.3, ("fixed tau_g = 0.07", "Accuracy"): 58.2},
)

TABLES = (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, TABLE6, TABLE7, TABLE8, TABLE_A1, TABLE_A2,
          FIG2, FIG3)
