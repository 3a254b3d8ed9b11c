"""The ``segmentation`` task: what changes in the engine when every pixel has a label.

* Training batches (:class:`JointViews`): each image and its mask go through the stage's joint
  view pipeline together, per image in DataLoader workers, each image's randomness seeded by
  (epoch seed, position in the epoch) as the core's per-image views are. A step's labels are
  the masks ``[B, S, S]`` (255: ignore).
* Forward (:meth:`SegmentationTask.forward`): the dense backbone gives pixel features
  ``[B, D, h, w]`` (and the auxiliary head's); the run's classifier is applied to every pixel,
  ``step.logits[role]`` ``[B, C, h, w]`` at the features' resolution (the losses upsample them
  to the masks, so that a distributed step gathers logits 64 times smaller than the crop's);
  the auxiliary logits, gathered alike, go to ``step.extras[AUX_LOGITS]``.
* Evaluation: whole-image (or sliding-window, ``seg.eval_mode``) inference at the evaluation
  view's scale, logits upsampled to the mask's own size, ``eval.posthoc_la_tau`` applied per
  pixel, and a confusion matrix per split (:class:`ltcore_seg.metrics.SegmentationOutputs`).
* Report, epoch line and plan: per-class IoU and accuracy against the training pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ltcore import (EpochKeys, Evaluation, PerClassTable, PluginError, Task, load_image,
                    seed_image_randomness, shut_down_workers, worker_options)

AUX_LOGITS = "seg_aux_logits"
"""``step.extras`` key of the auxiliary head's logits (role -> ``[B, C, h, w]``, the global
batch's)."""
METRIC = "segmentation"
AUX_HEAD = "seg_aux"
"""``model.heads`` key of the auxiliary head's per-pixel classifier."""


class SegmentationTask(Task):
    """Semantic segmentation: a label per pixel (``Dataset.task = "segmentation"``)."""

    name = "segmentation"
    metric = METRIC
    adopts = ("gml",)
    headline = "mIoU"
    per_class = PerClassTable("per_class_iou.csv", "train_pixels", "iou", "IoU",
                              "training pixels", "training pixels")
    standalone = False

    def views(self, run, stage, sources):
        return JointViews(run, stage, sources)

    def forward(self, run, step, roles, x):
        stage = step.stage
        model = stage.model
        features, aux = model.backbone(x)
        counts = [len(step.images[r]) for r in roles]
        aux_parts = aux.split(counts) if aux is not None else [None] * len(roles)
        for role, f, a in zip(roles, features.split(counts), aux_parts):
            step.features[role] = f
            if stage.views[role].classify:
                step.logits[role] = pixel_logits(model.classifier, f)
                if a is not None and AUX_HEAD in model.heads:
                    step.extras.setdefault(AUX_LOGITS, {})[role] = step.gather(pixel_logits(
                        model.heads[AUX_HEAD], a))

    def evaluate(self, run, model, splits, *, stage, final, keep_features):
        from .metrics import SegmentationOutputs

        outputs = {name: SegmentationOutputs(name, confusion(run, model, split),
                                             run.dataset.class_counts.cpu())
                   for name, split in splits.items()}
        return Evaluation(run, model, outputs, stage, final)

    def report(self, run, stage, evaluation, folder):
        from ltcore_seg.plots import per_class_iou_png

        from .metrics import write_per_class

        counts = run.dataset.class_counts.tolist()
        files = []
        for split, out in evaluation.outputs.items():
            files.append(write_per_class(folder / f"{split}_{self.per_class.file}",
                                         run.dataset.classes, counts, out, self.per_class))
            if run.config.limit.plots:
                files.append(per_class_iou_png(
                    {stage.name: out.per_class_iou().tolist()}, counts,
                    folder / f"{split}_per_class_iou.png", run.dataset.classes,
                    title=f"{split}: per-class IoU vs share of training pixels"))
        return files

    def epoch_figures(self, metrics):
        shown = [f"{name} {metrics[f'val/{name}']:5.2f}" for name in ("mIoU", "mAcc", "aAcc")
                 if f"val/{name}" in metrics]
        return ["val " + " ".join(shown)] if shown else []

    def plan_lines(self, run):
        from .metrics import pixel_group_lines

        return pixel_group_lines(run.dataset.class_counts.cpu(), run.dataset.classes)


def pixel_logits(classifier, features: torch.Tensor, size=None) -> torch.Tensor:
    """``classifier`` (a per-vector classifier, ``[N, D] -> [N, C]``) applied to every pixel
    of ``features`` ``[B, D, h, w]``: ``[B, C, h, w]`` float32, or upsampled bilinearly to
    ``size``, ``[B, C, *size]``."""
    b, d, h, w = features.shape
    flat = classifier(features.permute(0, 2, 3, 1).reshape(-1, d))
    logits = flat.reshape(b, h, w, -1).permute(0, 3, 1, 2).float()
    if size is None:
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


# -- training batches ------------------------------------------------------------------------


def read_pair(dataset, split, index: int):
    """Image ``index`` of ``split`` and its mask (class ids, 255 ignored): a PIL image and a
    uint8 array from files, uint8 tensors from memory."""
    if split.images is not None:
        return split.images[index], split.masks[index]
    from ltcore import DataError

    path = split.mask_paths[index]
    try:
        mask = dataset.read_mask(path)
    except OSError as exc:
        raise DataError(f"cannot read mask {path!r}: {exc}") from exc
    return load_image(split.paths[index]), mask


class _Pairs(torch.utils.data.Dataset):
    """An :class:`ltcore.EpochKeys` key (seed, position, index row) -> the transformed image
    and mask."""

    def __init__(self, dataset, split, transform):
        self.dataset, self.split, self.transform = dataset, split, transform

    def __len__(self):
        return len(self.split)

    def __getitem__(self, key):
        seed, position, row = key
        seed_image_randomness((seed * 1_000_003 + position * 101) % (2 ** 63))
        return self.transform(*read_pair(self.dataset, self.split, row[0]))


class JointViews:
    """A stage's training batches for segmentation: the joint view of each image and its mask,
    made per image in DataLoader workers (``views.workers``)."""

    def __init__(self, run, stage, sources):
        roles = [role for role, view in stage.views.items() if view.pipeline]
        if len(roles) != 1 or len(sources) != 1:
            raise PluginError(f"stage {stage.name!r}: segmentation trains one view of each "
                              f"image and its mask; the stage has views {roles} of sources "
                              f"{list(sources)}")
        self.role = roles[0]
        ds = run.dataset
        pipeline = run.component("view", stage.views[self.role].pipeline)
        if not getattr(pipeline, "joint", False):
            raise PluginError(f"view pipeline {pipeline.name!r} transforms images only; "
                              f"segmentation needs one that moves the mask with the image "
                              f"(seg-train, seg-flip)")
        transform = pipeline.make_reference(ds.image_size, ds.mean, ds.std)
        self.run = run
        self.batches = EpochKeys()
        workers = run.config.views.loader_workers
        self.loader = torch.utils.data.DataLoader(
            _Pairs(ds, ds.train, transform), batch_sampler=self.batches, num_workers=workers,
            persistent_workers=workers > 0, pin_memory=run.device.type == "cuda",
            **worker_options())

    def epoch(self, order, sources, batch_size, seed, start=0, state=None):
        """The epoch's batches from batch ``start`` on (each image's randomness depends on its
        position in the epoch only)."""
        from ltcore import Batch

        world, device = self.run.world, self.run.device
        all_rows = self.batches.epoch(order, batch_size, seed, start, world)
        for rows, (images, masks) in zip(all_rows, self.loader):
            shares = world.shares(len(rows)) if world.distributed else None
            yield Batch({sources[0]: rows[:, 0].to(device)},
                        {sources[0]: world.gather(masks.to(device), shares)
                         if shares else masks.to(device)},
                        {self.role: images.to(device, non_blocking=True)}, shares)

    def generator_state(self):
        return None

    def close(self):
        shut_down_workers(self.loader)


# -- evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def confusion(run, model, split) -> torch.Tensor:
    """The confusion matrix ``[C, C]`` (rows: true class) of ``model`` on ``split``: each image
    at the evaluation view's scale, whole or by sliding window (``seg.eval_mode``), its logits
    upsampled to its mask, ``eval.posthoc_la_tau`` applied per pixel. Over several ranks each
    evaluates its consecutive share of the images and the counts are summed."""
    from .metrics import confusion_matrix

    ds = run.dataset
    options = run.option("seg")
    num_classes = ds.num_classes
    transform = run.component("view", ds.eval_view).make_reference(ds.image_size, ds.mean,
                                                                   ds.std)
    tau = run.config.eval.posthoc_la_tau
    adjust = (tau * torch.log(run.class_prior.float())).view(1, -1, 1, 1) if tau else None
    total = torch.zeros(num_classes, num_classes, dtype=torch.long, device=run.device)
    was_training = model.training
    model.eval()
    try:
        with run.autocast():
            for image, mask in _eval_pairs(run, split, transform,
                                           run.world.span(len(split))):
                image, mask = image.to(run.device), mask.to(run.device)
                if options.eval_mode == "slide":
                    logits = slide_logits(model, image, ds.image_size, options.slide_stride,
                                          num_classes)
                else:
                    logits = pixel_logits(model.classifier, model.backbone(
                        run.speed.layout(image))[0], image.shape[-2:])
                logits = F.interpolate(logits.float(), size=mask.shape[-2:], mode="bilinear",
                                       align_corners=False)
                if adjust is not None:
                    logits = logits - adjust
                total += confusion_matrix(logits.argmax(dim=1), mask, num_classes)
    finally:
        model.train(was_training)
    return run.world.gather(total[None]).sum(0).cpu()  # the ranks' counts, summed


def _eval_pairs(run, split, transform, rows: slice):
    """(image ``[1, 3, h, w]``, mask ``[1, H, W]``) of the images ``rows`` of ``split``, through
    the evaluation view, read by DataLoader workers: one image at a time, as images of any size
    are (``eval.batch_size`` does not apply)."""
    loader = torch.utils.data.DataLoader(
        _EvalPairs(run.dataset, split, transform, range(len(split))[rows]), batch_size=1,
        num_workers=run.config.views.loader_workers, **worker_options())
    return iter(loader)


class _EvalPairs(torch.utils.data.Dataset):
    def __init__(self, dataset, split, transform, indices: range):
        self.dataset, self.split, self.transform = dataset, split, transform
        self.indices = indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, position):
        return self.transform(*read_pair(self.dataset, self.split, self.indices[position]))


def slide_logits(model, image: torch.Tensor, crop: int, stride: int,
                 num_classes: int) -> torch.Tensor:
    """Sliding-window logits ``[1, C, h, w]`` of ``image`` ``[1, 3, h, w]``: ``crop``-sized
    windows every ``stride`` pixels (the last flush with the border), their logits averaged
    where windows overlap (mmsegmentation's ``slide`` inference)."""
    _, _, height, width = image.shape
    stride = stride or max(1, crop * 2 // 3)
    rows = max(math.ceil((height - crop) / stride), 0) + 1
    cols = max(math.ceil((width - crop) / stride), 0) + 1
    summed = image.new_zeros((1, num_classes, height, width), dtype=torch.float32)
    hits = image.new_zeros((1, 1, height, width), dtype=torch.float32)
    for r in range(rows):
        for c in range(cols):
            top = max(min(r * stride, height - crop), 0)
            left = max(min(c * stride, width - crop), 0)
            window = image[:, :, top:top + crop, left:left + crop]
            logits = pixel_logits(model.classifier, model.backbone(window)[0],
                                  window.shape[-2:])
            summed[:, :, top:top + crop, left:left + crop] += logits
            hits[:, :, top:top + crop, left:left + crop] += 1
    return summed / hits
