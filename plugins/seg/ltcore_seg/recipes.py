"""The ``seg`` plugin's recipes: its presets' settings and the published numbers its runs
reproduce (GML Table 8)."""

from __future__ import annotations

DEMO = {
    # the embedded digit scenes on the CPU: a small FCN, SGD with mmsegmentation's poly decay
    "dataset": "digits-seg", "imbalance_factor": 10.0, "model.backbone": "fcn-small",
    "model.classifier": "linear", "checkpoint.monitor": "val/mIoU", "batch_size": 16,
    "epochs": 30, "optim.lr": 0.2, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
    "schedule.kind": "polynomial", "schedule.power": 0.9, "schedule.min_lr": 1e-4,
    "schedule.per_step": True, "schedule.warmup_epochs": 0,
}

ADE20K_FCN_R50 = {
    # mmsegmentation's fcn_r50-d8_4xb4-160k_ade20k-512x512: 4 GPUs x 4 crops of 512, SGD lr 0.01
    # momentum 0.9 weight decay 5e-4, PolyLR power 0.9 down to 1e-4 per iteration over 160k
    # iterations; auxiliary loss weight 0.4; evaluated as whole images (mode 'whole'). 160k
    # steps run as 10 epochs of 16,000 steps, evaluated after each.
    "dataset": "ade20k", "imbalance_factor": "natural", "model.backbone": "fcn-resnet50-d8",
    "model.pretrained": "hub", "model.classifier": "linear", "views.image_size": 512,
    "batch_size": 16, "epochs": 10, "seg.interval_steps": 16000, "seg.aux_weight": 0.4,
    "seg.eval_mode": "whole", "optim.lr": 0.01, "optim.momentum": 0.9,
    "optim.weight_decay": 5e-4, "schedule.kind": "polynomial", "schedule.power": 0.9,
    "schedule.min_lr": 1e-4, "schedule.per_step": True, "schedule.warmup_epochs": 0,
    "checkpoint.monitor": "val/mIoU",
}

TABLE_8 = "GML Table 8, ADE20K validation, FCN with ResNet-50, 160k iterations"
