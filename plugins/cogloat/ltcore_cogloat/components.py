"""CoGloAT's run components: the k-global sampler, the MoCo v2 key encoder and queue, and the
k-global contrastive loss term that ties them together.

These are registered by the ``cogloat`` plugin (``k-global`` sampler, ``momentum-encoder`` and
``moco-queue`` memory banks, ``cogloat`` loss), so any plugin can build them by name with
``run.build(kind, name, **options)``.

How the k-global positives reach the step: the positives' *images* must come out of the view
pipelines like any other view, so they have to be part of the epoch rows the sampler returns.
:class:`KGlobalSampler` therefore draws them in ``epoch_indices``: it takes the base sampler's
epoch order, cuts it into consecutive chunks of ``batch_size`` rows (exactly the batches the
engine will make of it) and calls :class:`~ltcore_cogloat.positives.GlobalPositiveSampler` with
each chunk as "the batch", so that positives come from outside the batch whenever the class has
at least ``k`` other images outside it. Each row is ``(sample, pos1, ..., posk)`` and the sampler's
``sources`` name the columns; the views ``pos1..posk`` take their images from those columns.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltcore import LossTerm, PluginError, Step, hookimpl

from .loss import adaptive_temperatures, global_contrastive_loss
from .moco import LabelledQueue, momentum_update
from .positives import GlobalPositiveSampler

SECOND_VIEW_EMBEDDINGS = "second_view_embeddings"
"""``step.extras`` key: ``[B, D]`` normalised embeddings of a second view of the samples behind the
stage's (single) embedding view, computed outside the stacked forward (by a momentum encoder,
without gradient). ProCo uses it as the second view ``v+_{i,2}`` of its symmetric loss."""

TEMPERATURE_METRIC = "temperature/class-"
"""Prefix of the per-class temperature figures of a stage's epochs (``temperature/class-3``)."""

KEY_ROLE = "key"
"""Role of the second view of each sample, embedded by the key encoder only."""


def positive_roles(k: int) -> list[str]:
    """Roles (and sampler sources) of the k-global positives: ``pos1 .. posk``."""
    return [f"pos{j + 1}" for j in range(k)]


# -- the k-global sampler -------------------------------------------------------------------


class KGlobalSampler:
    """Epoch rows ``(sample, pos1, ..., posk)``: a base sampler's order plus k same-label positives.

    ``epoch_indices`` returns ``LongTensor [N, 1 + k]`` (``[N]`` when ``k == 0``). The positives of
    each row are drawn by :class:`GlobalPositiveSampler` with the row's ``batch_size`` chunk of the
    epoch order as the batch: ``k`` distinct training images of the row's label from outside that
    chunk when the class has at least ``k`` of them, else other images of the class, else (a
    one-image class) the image itself.
    """

    def __init__(self, base, labels: Tensor, k: int, batch_size: int, num_classes: int | None = None):
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.base = base
        self.k = k
        self.batch_size = batch_size
        self.positives = GlobalPositiveSampler(labels, num_classes)
        self.sources = ("sample", *positive_roles(k))

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor:
        """The base order with ``k`` positives per row, drawn with ``generator``."""
        order = self.base.epoch_indices(epoch, generator)
        if order.dim() != 1:
            raise PluginError("the k-global sampler needs a base sampler with one index per row; "
                              f"{type(self.base).__name__} returns rows of {order.shape[1]}")
        if self.k == 0:
            return order
        positives = self.positives.to(order.device)
        rows = [torch.cat([chunk.unsqueeze(1), positives.draw(chunk, self.k, generator)], dim=1)
                for chunk in order.split(self.batch_size)]
        return torch.cat(rows)

    def __len__(self) -> int:
        return self.positives.num_samples


def k_global_sampler(run, k: int = 3, base: str | None = None, batch_size: int | None = None,
                     **base_options) -> KGlobalSampler:
    """``k-global`` sampler component: rows ``(sample, pos1..posk)`` over the ``base`` sampler
    (default: the run's ``sampler`` setting, instance-balanced unless changed), chunked by the
    run's batch size."""
    base = base or run.config.sampler
    if base == "k-global":
        base = "instance-balanced"
    base_sampler = run.build("sampler", base, **base_options)
    return KGlobalSampler(base_sampler, run.dataset.train.labels, k,
                          batch_size or run.config.batch_size, run.dataset.num_classes)


# -- MoCo v2: momentum key encoder and queue ------------------------------------------------


class MomentumEncoder(nn.Module):
    """MoCo key encoder: an EMA copy of a model's backbone and projection head.

    Its parameters never receive gradients; :meth:`update` moves them towards the query
    encoder's (``theta_k <- m theta_k + (1 - m) theta_q``) and copies the BatchNorm buffers (see
    :func:`~ltcore_cogloat.moco.momentum_update`). ``batchnorm`` chooses how the key encoder
    normalises: ``"batch"`` uses the statistics of the key batch (train mode, as MoCo's key
    encoder) and ``"running"`` the running statistics copied from the query encoder (eval mode).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, momentum: float = 0.999,
                 batchnorm: str = "batch"):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if batchnorm not in ("batch", "running"):
            raise ValueError(f"batchnorm must be 'batch' or 'running', got {batchnorm!r}")
        self.key = nn.ModuleDict({"backbone": copy.deepcopy(backbone), "head": copy.deepcopy(head)})
        self.key.requires_grad_(False)
        # The query modules are held in a tuple so that they are neither submodules (saved twice,
        # moved twice) nor parameters of this module.
        self._query = (nn.ModuleDict({"backbone": backbone, "head": head}),)
        self.momentum = momentum
        self.batchnorm = batchnorm

    @torch.no_grad()
    def update(self, momentum: float | None = None) -> None:
        """One EMA step towards the query encoder (``momentum`` defaults to the configured one)."""
        momentum_update(self.key, self._query[0], self.momentum if momentum is None else momentum)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """L2-normalised key embeddings ``[B, D]`` (float32) of ``images``."""
        self.key.train(self.batchnorm == "batch")
        features = self.key["backbone"](images)
        return F.normalize(self.key["head"](features).float(), dim=1)


def momentum_encoder(run, momentum: float = 0.999, batchnorm: str = "batch", model=None) -> MomentumEncoder:
    """``momentum-encoder`` component: the key encoder of ``model`` (default: the run's model),
    a copy of its backbone and projection head. Attach it with ``run.add_module`` and call
    ``update()`` in ``step_end``."""
    model = model or run.model
    head = run.projection_head(model)
    return MomentumEncoder(model.backbone, head, momentum, batchnorm).to(run.device)


def moco_queue(run, size: int = 4096, dim: int | None = None) -> LabelledQueue:
    """``moco-queue`` component: a FIFO queue of ``size`` labelled keys of width ``dim`` (default:
    the projection width). Attach it with ``run.add_module`` and ``enqueue`` after the loss."""
    return LabelledQueue(size, dim or run.config.model.projection_dim).to(run.device)


# -- the CoGloAT loss term ------------------------------------------------------------------


class GlobalContrastiveTerm:
    """The k-global contrastive loss of a stage, as a loss-term function of the step.

    Every step: the query ``q`` is the stage's embedding of view ``query_role`` (with gradient);
    the key encoder embeds the ``key`` view (the query's own second view) and the ``pos1..posk``
    views (its k-global positives) in one forward under ``no_grad``; the loss is
    :func:`~ltcore_cogloat.loss.global_contrastive_loss` against the queue, with the per-anchor
    adaptive temperature ``tau[y_i]`` or a constant one. It is also a run plugin object: after
    each optimiser step of its stage (``step_end``) it moves the key encoder and enqueues the
    step's keys with their labels.
    """

    def __init__(self, run, encoder: MomentumEncoder, queue: LabelledQueue, *, stage, query_role: str,
                 key_role: str = KEY_ROLE, k: int = 3, temperature: float = 0.1,
                 adaptive: bool = True, gamma: float = 0.1, variant: str = "unsupervised+kglobal",
                 include_batch_keys: bool = True, kcl_positives: int | None = None,
                 temperature_metrics: bool = False):
        self.run = run
        self.stage = stage
        self.encoder = encoder
        self.queue = queue
        self.query_role = query_role
        self.key_role = key_role
        self.positive_roles = positive_roles(k)
        self.k = k
        self.variant = variant
        self.include_batch_keys = include_batch_keys
        self.kcl_positives = kcl_positives
        self.temperature = temperature
        self.temperatures = (adaptive_temperatures(run.class_counts.float(), gamma).to(run.device)
                             if adaptive else None)
        self.extras_key = f"cogloat/keys/{id(self)}"
        self.temperature_metrics = temperature_metrics

    def class_temperatures(self) -> Tensor:
        """``[C]`` the temperature the anchors of each class use (eq. 8, or the constant)."""
        if self.temperatures is not None:
            return self.temperatures
        return torch.full((len(self.run.class_counts),), float(self.temperature))

    def keys(self, step: Step) -> tuple[Tensor, Tensor]:
        """Key-encoder embeddings of the key view ``[B, D]`` and of the positives ``[B, k, D]``
        (of the global batch in a distributed run)."""
        roles = [self.key_role, *self.positive_roles]
        images = torch.cat([step.images[role] for role in roles])
        with self.run.autocast():
            embedded = self.encoder(images)
        batch = step.images[self.key_role].shape[0]
        keys = embedded[:batch]
        positives = embedded[batch:].reshape(self.k, batch, embedded.shape[1]).transpose(0, 1)
        return step.gather(keys), step.gather(positives)

    def __call__(self, step: Step) -> Tensor:
        queries = step.embeddings[self.query_role]
        labels = step.targets(self.query_role)
        keys, positives = self.keys(step)
        step.extras[self.extras_key] = (keys, labels)
        step.extras.setdefault(SECOND_VIEW_EMBEDDINGS, keys)
        temperature = self.temperature if self.temperatures is None else self.temperatures[labels]
        return global_contrastive_loss(
            queries, keys, positives, self.queue.keys, labels, self.queue.labels, temperature,
            variant=self.variant, negatives_valid=self.queue.valid,
            include_batch_keys=self.include_batch_keys, kcl_positives=self.kcl_positives)

    @hookimpl
    def step_end(self, step: Step) -> None:
        if step.stage is self.stage:
            self.after_step(step)

    @hookimpl
    def epoch_end(self, run, stage, epoch: int, metrics: dict[str, float]) -> None:
        """With ``temperature_metrics``: each class's temperature in its stage's epoch record
        (``temperature/class-<index>``, logged per epoch like the other figures)."""
        if self.temperature_metrics and stage is self.stage:
            for index, value in enumerate(self.class_temperatures().tolist()):
                metrics[f"{TEMPERATURE_METRIC}{index}"] = value

    def after_step(self, step: Step) -> None:
        """After the optimiser step: EMA update of the key encoder, then enqueue this step's keys."""
        self.encoder.update()
        stored = step.extras.pop(self.extras_key, None)
        if stored is not None:
            self.queue.enqueue(*stored)


def cogloat_term(run, *, k: int = 3, temperature: float = 0.1, adaptive: bool = True,
                 gamma: float = 0.1, variant: str = "unsupervised+kglobal",
                 include_batch_keys: bool = True, kcl_positives: int | None = None,
                 momentum: float = 0.999, key_batchnorm: str = "batch", queue_size: int = 4096,
                 weight: float = 1.0, stage=None, plugin: str = "cogloat",
                 name: str = "cogloat", temperature_metrics: bool = False) -> LossTerm:
    """Set up CoGloAT on ``stage`` (default: the main stage) and return its loss term.

    Adds the query view (``con0``, through the stage model, embedded), the key view and ``k``
    positive views (key encoder only, ``forward=False``), switches the stage's sampler to
    ``k-global`` over its current one, and attaches the key encoder and the queue to the run as
    ``<name>_key_encoder`` and ``<name>_queue``. The queue holds at most as many keys as the
    training set has images. The term's function is registered as a run plugin object named
    ``name``: after every step of ``stage`` it updates the key encoder and the queue, and with
    ``temperature_metrics`` it adds each class's temperature to the stage's epoch records
    (``temperature/class-<index>``).
    """
    stage = stage or run.main_stage
    contrastive = run.config.views.contrastive
    (query_role,) = run.contrastive_views(1, stage)
    stage.add_view(KEY_ROLE, contrastive, forward=False)
    for role in positive_roles(k):
        stage.add_view(role, contrastive, source=role, forward=False)
    if stage.sampler != "k-global":
        stage.sampler_options = {"k": k, "base": stage.sampler, **stage.sampler_options}
        stage.sampler = "k-global"
    elif stage.sampler_options.get("k", 3) != k:
        raise PluginError(f"stage {stage.name!r} already draws {stage.sampler_options.get('k', 3)} "
                          f"k-global positives; plugin {plugin!r} asks for {k}")
    encoder = run.add_module(f"{name}_key_encoder", run.build(
        "memory-bank", "momentum-encoder", momentum=momentum, batchnorm=key_batchnorm,
        model=stage.model))
    size = min(queue_size, len(run.dataset.train))
    queue = run.add_module(f"{name}_queue", run.build("memory-bank", "moco-queue", size=size))
    fn = GlobalContrastiveTerm(run, encoder, queue, stage=stage, query_role=query_role, k=k,
                               temperature=temperature, adaptive=adaptive, gamma=gamma,
                               variant=variant, include_batch_keys=include_batch_keys,
                               kcl_positives=kcl_positives,
                               temperature_metrics=temperature_metrics)
    run.register(fn, name)
    return LossTerm(name, fn, plugin, weight, kind="contrastive")
