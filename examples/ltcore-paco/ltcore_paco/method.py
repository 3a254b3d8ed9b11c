"""PaCo in an ltcore run: the momentum key encoder, the labelled queue and the loss term.

Per step (the reference's ``MoCo._train`` and ``PaCoLoss``):

* the query view (role ``cls``, ``views.classifier``) goes through the stage model: its
  classifier logits are the centre logits, its normalised projection the query ``q``;
* the key view (role ``paco_key``, ``views.contrastive``, not in the stacked forward) goes
  through the key encoder, without gradient, to the keys ``k``;
* the loss contrasts each query with ``cat(q, k, queue)`` and the class centres
  (:func:`~ltcore_paco.loss.paco_loss`), the term's contrastive bias added to both parts;
* after the optimiser step (``step_end``) the key encoder moves towards the query encoder
  (``theta_k <- m theta_k + (1 - m) theta_q``) and the keys are enqueued.

The key encoder and the queue are run modules (``paco_key_encoder``, ``paco_queue``), so every
checkpoint and the final model carry them and a resumed run continues with them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltcore import CLASSIFIER_ROLE, LossTerm, hookimpl

from .loss import paco_loss

KEY_ROLE = "paco_key"
"""Role of the key view: augmented by ``views.contrastive``, embedded by the key encoder only."""
KEY_ENCODER_MODULE = "paco_key_encoder"
QUEUE_MODULE = "paco_queue"


class KeyEncoder(nn.Module):
    """The momentum (key) encoder: a copy of a backbone and its projection head.

    Its parameters take no gradient; :meth:`update` moves them towards the query encoder's.
    Its BatchNorm layers normalise with the key batch's statistics and keep running statistics
    of their own, as the reference's ``encoder_k`` (only parameters are averaged).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.head = copy.deepcopy(head)
        self.requires_grad_(False)

    @torch.no_grad()
    def update(self, backbone: nn.Module, head: nn.Module, momentum: float) -> None:
        """``theta_k <- momentum * theta_k + (1 - momentum) * theta_q`` for every parameter."""
        queries = [*backbone.parameters(), *head.parameters()]
        keys = [*self.backbone.parameters(), *self.head.parameters()]
        for key, query in zip(keys, queries, strict=True):
            key.mul_(momentum).add_(query.detach(), alpha=1.0 - momentum)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """L2-normalised key embeddings ``[B, D]`` (float32) of ``images``."""
        self.train()
        return F.normalize(self.head(self.backbone(images)).float(), dim=1)


class KeyQueue(nn.Module):
    """FIFO queue of the last ``size`` keys with their labels (the reference's ``queue``,
    ``queue_l`` and ``queue_ptr``), plus which slots have been written (``valid``)."""

    keys: Tensor
    labels: Tensor
    valid: Tensor
    pointer: Tensor

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("labels", torch.zeros(size, dtype=torch.long))
        self.register_buffer("valid", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor) -> None:
        """Write ``keys [B, D]`` and ``labels [B]`` over the oldest slots (the last ``size`` of
        them when ``B > size``) and advance the pointer by ``B``."""
        if self.size == 0:
            return
        count = keys.shape[0]
        skipped = max(count - self.size, 0)
        offsets = torch.arange(skipped, count, device=self.keys.device)
        slots = (self.pointer + offsets) % self.size
        self.keys.index_copy_(0, slots, keys[skipped:].detach().to(self.keys.dtype))
        self.labels.index_copy_(0, slots, labels[skipped:])
        self.valid.index_fill_(0, slots, True)
        self.pointer.copy_((self.pointer + count) % self.size)


def split_bias(bias: Tensor | None, rows: int, samples: int, classes: int):
    """The sample and centre parts of a contrastive bias over ``samples + classes`` columns."""
    if bias is None:
        return None, None
    bias = torch.broadcast_to(bias, (rows, samples + classes))
    return bias[:, :samples], bias[:, samples:]


class PaCoTerm:
    """The PaCo loss of one stage as a loss-term function and a run plugin object.

    ``options`` are the plugin's :class:`~ltcore_paco.plugin.Options`. The keys of a step are
    kept in ``step.extras`` until ``step_end`` enqueues them.
    """

    def __init__(self, run, stage, options, encoder: KeyEncoder, queue: KeyQueue):
        self.run = run
        self.stage = stage
        self.options = options
        self.encoder = encoder
        self.queue = queue
        self.prior = run.class_prior if options.centre_prior else None
        self.extras_key = f"paco/keys/{id(self)}"

    def keys(self, step) -> Tensor:
        """Key-encoder embeddings ``[B, D]`` of the step's key view (of the global batch in a
        distributed run)."""
        with self.run.autocast():
            return step.gather(self.encoder(step.images[KEY_ROLE]))

    def __call__(self, step) -> Tensor:
        options = self.options
        queries = step.embeddings[CLASSIFIER_ROLE]
        labels = step.targets(CLASSIFIER_ROLE)
        keys = self.keys(step)
        step.extras[self.extras_key] = (keys, labels)
        samples = torch.cat([queries, keys, self.queue.keys])
        sample_labels = torch.cat([labels, labels, self.queue.labels])
        always = torch.ones(2 * len(labels), dtype=torch.bool, device=labels.device)
        valid = torch.cat([always, self.queue.valid])
        centre_logits = step.logits[CLASSIFIER_ROLE]
        classes = torch.arange(centre_logits.shape[1], device=labels.device)
        bias = step.contrastive_bias(labels, sample_labels, classes)
        sample_bias, centre_bias = split_bias(bias, len(labels), len(sample_labels), len(classes))
        return paco_loss(
            queries, labels, centre_logits, samples, sample_labels, alpha=options.alpha,
            beta=options.beta, gamma=options.gamma, temperature=options.temperature,
            centre_temperature=options.centre_temperature, class_prior=self.prior,
            sample_valid=valid, logit_bias=sample_bias, centre_bias=centre_bias)

    @hookimpl
    def step_end(self, step) -> None:
        if step.stage is not self.stage:
            return
        model = self.stage.model
        self.encoder.update(model.backbone, self.run.projection_head(model),
                            self.options.momentum)
        stored = step.extras.pop(self.extras_key, None)
        if stored is not None:
            self.queue.enqueue(*stored)


def paco_term(run, options, stage=None, plugin: str = "paco") -> LossTerm:
    """Set up PaCo on ``stage`` (default: the main stage) and return its loss term.

    Adds the query view (``cls``, classified and embedded) and the key view, attaches the key
    encoder and the queue (at most as long as the training set) as run modules and registers
    the term as the run plugin object ``paco`` (its ``step_end`` updates both).
    """
    stage = stage or run.main_stage
    model = stage.model
    run.classifier_view(stage)
    stage.add_view(CLASSIFIER_ROLE, run.config.views.classifier, classify=True, embed=True)
    stage.add_view(KEY_ROLE, run.config.views.contrastive, forward=False)
    head = run.projection_head(model)
    encoder = run.add_module(KEY_ENCODER_MODULE, KeyEncoder(model.backbone, head))
    size = min(options.queue_size, len(run.dataset.train))
    queue = run.add_module(QUEUE_MODULE, KeyQueue(size, run.config.model.projection_dim))
    fn = PaCoTerm(run, stage, options, encoder, queue)
    run.register(fn, plugin)
    return LossTerm("paco", fn, plugin, options.weight, kind="contrastive", rebalanceable=True)
