"""The ``seg`` plugin: long-tailed semantic segmentation as an ltcore task.

Registers the ``segmentation`` task (:mod:`ltcore_seg.task`), its datasets (``digits-seg``,
embedded; ``ade20k``; ``seg-folder``), joint image-and-mask views, FCN backbones, the
``segmentation`` metric (mIoU, mAcc, aAcc, per pixel-frequency group) and mmsegmentation's
ADE20K FCN recipe as presets. ``setup_run`` trains FCN's two heads per pixel: the segmentation
head with (logit-adjusted) CE, the auxiliary head with the same loss at ``seg.aux_weight``.
With ``--plugin gml`` (adopted by the task) it trains GML's dense form (GML paper, sec. 4.7):
both heads cosine classifiers with L_cls, plus L_GML on the segmentation head's pixel features
against class-wise queues of pixels (:mod:`ltcore_seg.losses`).
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from ltcore import doc, hookimpl

from .recipes import ADE20K_FCN_R50, DEMO, TABLE_8

PLUGIN = "seg"


@attrs.define(kw_only=True)
class Options:
    aux_weight: float = doc("weight of the auxiliary head's loss (mmsegmentation's FCN: 0.4; "
                            "0: no auxiliary head)", default=0.4, validator=v.ge(0))
    la_tau: float = doc("logit adjustment of the pixel CE without gml: CE(logits + tau log pi) "
                        "with pi the training pixel prior (0: plain CE)", default=0.0,
                        validator=v.ge(0))
    interval_steps: int = doc("optimiser steps per epoch (an interval between evaluations, "
                              "images drawn with reshuffling); 0: one pass over the images",
                              default=0, validator=v.ge(0))
    eval_mode: str = doc("whole (each image at the evaluation view's scale at once) | slide "
                         "(crop-sized windows, logits averaged)", default="whole",
                         validator=v.in_(("whole", "slide")))
    slide_stride: int = doc("stride of the sliding windows (0: two thirds of the crop)",
                            default=0, validator=v.ge(0))
    view: str = doc("the joint image-and-mask view pipeline of training ('' = the dataset's: "
                    "seg-train, mmsegmentation's ADE20K pipeline, for image files; seg-flip for "
                    "digits-seg); views.classifier does not apply", default="")
    gml_pixels: int = doc("with gml: pixels sampled per class present in a batch, the queries "
                          "of L_GML and the entries written to the queues", default=64,
                          validator=v.gt(0))


# -- registration ---------------------------------------------------------------------------


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_tasks(register):
    from .task import SegmentationTask

    register("segmentation", SegmentationTask(),
             "semantic segmentation: a label per pixel (masks; mIoU, mAcc, aAcc)")


def _digits_seg(config):
    """Embedded: scenes of 2-4 real handwritten digits on 48 x 48 canvases, a label per pixel
    (background and the ten digits), the digits long-tailed by the imbalance factor."""
    from .data import digits_seg

    return digits_seg(config.imbalance_factor)


def _ade20k(config):
    """ADE20K (SceneParsing, 150 classes) from --data-dir: ADEChallengeData2016/images and
    annotations, label 0 ignored; its validation images are the test set."""
    from .data import ade20k

    return ade20k(config.data_dir, protocol=config.eval.protocol)


def _seg_folder(config):
    """Images and masks from --data-dir: DIR/{train,val,test}/{images,masks}/<name>, mask ids
    0..C-1 and 255 ignored, class names from DIR/classes.txt."""
    from .data import seg_folder

    return seg_folder(config.data_dir, protocol=config.eval.protocol)


@hookimpl
def register_datasets(register):
    register("digits-seg", _digits_seg)
    register("ade20k", _ade20k)
    register("seg-folder", _seg_folder)


@hookimpl
def register_views(register):
    from .views import PIPELINES

    for pipeline in PIPELINES:
        register(pipeline.name, pipeline, pipeline.description)


def _fcn_resnet50_d8(in_channels: int = 3, **options):
    """mmsegmentation's FCN-R50-D8: dilated ResNet-50 (output stride 8), FCN head of 512
    channels and an auxiliary head on layer 3; pretrained=True: torchvision's ImageNet
    weights"""
    from .models import fcn_resnet50_d8

    return fcn_resnet50_d8(in_channels, **options)


def _fcn_small(in_channels: int = 3, **options):
    """A small FCN for the CPU (output stride 8, option width)."""
    from .models import fcn_small

    return fcn_small(in_channels, **options)


@hookimpl
def register_backbones(register):
    register("fcn-resnet50-d8", _fcn_resnet50_d8)
    register("fcn-small", _fcn_small)


class _SegmentationMetric:
    """mIoU, mAcc, aAcc and their frequent/common/rare group means (always computed)."""

    when = "epoch"
    needs_features = False

    def __call__(self, outputs):
        from .metrics import segmentation_figures

        return segmentation_figures(outputs.confusion, outputs.class_counts)


@hookimpl
def register_metrics(register):
    from .task import METRIC

    register(METRIC, _SegmentationMetric(), _SegmentationMetric.__doc__)


class StepsSampler:
    """``steps * batch_size`` image indices per epoch (``steps`` 0: a pass over the images),
    drawn as consecutive shuffled passes over the images (an interval of an iteration-based
    schedule)."""

    def __init__(self, run, steps: int = 0):
        self.size = len(run.dataset.train)
        self.draws = steps * run.config.batch_size if steps else self.size

    def __len__(self) -> int:
        return self.draws

    def epoch_indices(self, epoch, generator):
        import torch

        passes = -(-self.draws // self.size)
        return torch.cat([torch.randperm(self.size, generator=generator)
                          for _ in range(passes)])[:self.draws]


@hookimpl
def register_samplers(register):
    register("seg-steps", StepsSampler)


# -- recipes -------------------------------------------------------------------------------


@hookimpl
def register_presets(register):
    register("default", DEMO, "the embedded digit scenes (digits-seg), a small FCN, poly decay "
             "per step; best epoch by val/mIoU")
    register("ade20k-fcn-r50", ADE20K_FCN_R50,
             "mmsegmentation's FCN-R50-D8 on ADE20K: crop 512, batch 16, SGD lr 0.01, poly "
             "decay over 160k steps (10 x 16k), auxiliary head 0.4 (GML Table 8's CE row; with "
             "--plugin gml, gml's preset of this name adds its dense form)")
    register("smoke", {"dataset": "digits-seg", "model.backbone": "fcn-small",
                       "seg.interval_steps": 0, "model.pretrained": "none",
                       "views.image_size": 0},
             "ltrun reproduce --smoke: the embedded digit scenes and the small FCN")


@hookimpl
def register_reference_results(register):
    register(plugins="seg", dataset="ade20k", imbalance_factor="natural",
             metrics={"test/mIoU": 36.1, "test/mAcc": 45.4}, source=f"{TABLE_8} (cross-entropy)")
    for alpha, (miou, macc) in ((0.2, (38.1, 51.4)), (1.0, (31.7, 59.8))):
        register(plugins="seg,gml", dataset="ade20k", imbalance_factor="natural",
                 metrics={"test/mIoU": miou, "test/mAcc": macc},
                 source=f"{TABLE_8} (GML, alpha = {alpha:g})", match={"gml.gml_alpha": alpha})


# -- the run --------------------------------------------------------------------------------


@hookimpl
def setup_run(run):
    from ltcore import PluginError

    from .training import setup_segmentation

    if run.task.name != "segmentation":
        raise PluginError(f"plugin 'seg' trains semantic segmentation, but dataset "
                          f"{run.dataset.name!r} has one label per image; use digits-seg, "
                          f"ade20k or seg-folder")
    setup_segmentation(run, run.option(PLUGIN))
