"""ICCL assembled into an ltcore run: the two branches, the warm-up switch and stage 2.

Stage ``train`` (representation learning, paper sec. 3.1-3.4), views per step:

* ``cls``: the class-agnostic sample ``x^h`` (source ``sample``), classified (uniform branch,
  ``L_ce``) and projected to ``z^h`` (plain centroid loss during the warm-up; centroid updates);
* ``iccl_tail``: the class-aware sample ``x^t`` (source ``paired``), augmented but not forwarded;
* ``iccl_mix``: ``x^f = lambda x^h + (1 - lambda) x^t`` (eq. 3), made in ``adjust_images`` with
  one ``lambda ~ Beta(a, b)`` per sample (kept in ``step.extras["iccl.lambda"]``),
  classified (``L_ce^it``, eq. 7) and projected to ``z^f`` (``L_cc^it``, eq. 5).

During the first T epochs ``iccl_mix`` is not forwarded and the loss is
``L_ce + w_cc L_cc`` (``L_cc = -log p(c^{y^h} | x^h)``); from epoch T it is eq. 8,
``w_u L_ce + w_it (L_ce^it + L_cc^it)``
(or each interpolative term with its own weight). The phase is logged as the metric
``iccl/interpolative`` (0 or 1) and announced on the ``ltcore_iccl`` logger.

Stage ``classifier`` (classifier rebalancing, sec. 3.5): the projection head is no longer used;
the classifier (and, as an option, the encoder at a scaled learning rate) is fine-tuned on the
class-aware sampler with ``gamma'`` under eq. 9, distilling from a frozen copy of the stage-1
network taken when the stage starts and kept as the checkpointed module ``iccl_teacher``.

:class:`ICCLRun` is ICCL's plugin object in a run: its hook implementations switch the phase,
mix the images, embed the branches, update the centroids and take the teacher's snapshot.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ltcore import (CLASSIFIER_ROLE, LossTerm, PluginError, ScheduleConfig, cross_entropy_term,
                    hookimpl)

from .loss import (
    centroid_contrastive_loss,
    distillation_loss,
    interpolate,
    interpolative_cross_entropy,
    sample_interpolation_weights,
)

if TYPE_CHECKING:
    from ltcore import Run, Stage, Step

    from .plugin import Options

PLUGIN = "iccl"
HEAD_ROLE = "iccl_head"
TAIL_ROLE = "iccl_tail"
MIX_ROLE = "iccl_mix"
PAIRED = "paired"
LAMBDA = "iccl.lambda"
CENTROIDS_MODULE = "iccl_centroids"
TEACHER_MODULE = "iccl_teacher"
STAGE = "classifier"
SEED_OFFSET = 0x1CC1
"""Added to the run's epoch seed for the interpolation weights' generator."""

log = logging.getLogger("ltcore_iccl")


def warmup_epochs(options: "Options", epochs: int) -> int:
    """T: the option, or half the train stage's epochs when it is unset."""
    return options.warmup_epochs if options.warmup_epochs is not None else epochs // 2


class FineTuneGroups:
    """Parameter groups of the rebalancing stage when the encoder is fine-tuned too: the
    backbone at ``encoder_lr_scale`` times the stage's learning rate, the classifier at it; heads
    such as the projection MLP are left out (they are not used in this stage)."""

    def __init__(self, encoder_lr_scale: float):
        self.encoder_lr_scale = encoder_lr_scale

    def __call__(self, model) -> list[dict]:
        return [{"params": list(model.backbone.parameters()), "lr_scale": self.encoder_lr_scale},
                {"params": list(model.classifier.parameters()), "lr_scale": 1.0}]

    def __repr__(self) -> str:
        return f"FineTuneGroups(encoder_lr_scale={self.encoder_lr_scale})"


class ICCLRun:
    """ICCL's plugin object in a run: the state its hooks and loss terms share. The centroids
    and the teacher are run modules, the phase follows from the epoch; the object's own state
    is whether the teacher's snapshot was taken and the interpolation generator."""

    def __init__(self, run: "Run", options: "Options"):
        self.options = options
        self.stage: Stage = run.main_stage
        self.warmup_epochs = warmup_epochs(options, self.stage.epochs)
        self.interpolative = self.warmup_epochs == 0
        self.head_role = CLASSIFIER_ROLE if options.head_view == "shared" else HEAD_ROLE
        self.generator: torch.Generator | None = None
        self.provider = run.build("prototype-provider", "iccl-centroids", module=CENTROIDS_MODULE,
                                  momentum=options.centroid_momentum,
                                  normalize=options.normalize_centroids, init=options.centroid_init,
                                  update=options.centroid_update)
        self.terms: dict[str, LossTerm] = {}
        self.rebalancing: Stage | None = None
        self.teacher: nn.Module | None = None
        self.teacher_reuses_features = False
        self.fine_tune: FineTuneGroups | None = None
        self.teacher_snapshot = False
        self._classifier: LossTerm | None = None
        self._classifier_weight = 1.0

    # -- hooks --------------------------------------------------------------------------------

    @hookimpl
    def epoch_start(self, run, stage, epoch):
        if stage is not self.stage:
            return
        self.set_phase(epoch)
        seed = (run.epoch_seed(stage, epoch) + SEED_OFFSET) % 2 ** 63
        self.generator = torch.Generator(device=run.device).manual_seed(seed)

    @hookimpl
    def adjust_images(self, step):
        if step.stage is self.stage and self.interpolative:
            self.mix(step)

    @hookimpl(tryfirst=True)
    def adjust_embeddings(self, step):
        if step.stage is self.stage:
            self.embed(step)

    @hookimpl
    def step_end(self, step):
        if step.stage is self.stage:
            self.update_centroids(step)

    @hookimpl
    def stage_start(self, run, stage):
        if stage is self.stage and stage.sampler != "iccl-paired":
            raise PluginError(f"plugin 'iccl' trains stage {stage.name!r} with its paired "
                              f"sampler, but another selected plugin replaced it with "
                              f"{stage.sampler!r}; the two cannot share one stage")
        if stage is self.rebalancing:
            self.snapshot_teacher(run)

    @hookimpl
    def adjust_parameter_groups(self, run, stage, groups):
        if stage is self.rebalancing and self.fine_tune is not None:
            groups[:] = self.fine_tune(stage.model)

    @hookimpl
    def epoch_end(self, run, stage, epoch, metrics):
        if stage is self.stage:
            metrics["iccl/interpolative"] = float(self.interpolative)
            metrics["iccl/centroids_seen"] = float(self.provider.bank.initialized.sum())

    @hookimpl
    def stage_end(self, run, stage):
        """The norm of every class's centroid after stage 1 (the paper's Fig. 2 shows them
        balanced across head and tail classes; 1 for every seen class with
        ``normalize_centroids``), as the table ``iccl/centroid_norms.csv``."""
        if stage is not self.stage:
            return
        norms = self.provider.centroids.norm(dim=1).tolist()
        counts = run.dataset.class_counts.tolist()
        run.recorder.table("iccl/centroid_norms.csv", ["class_index", "class", "train_count",
                                                       "centroid_norm"],
                           [[i, name, n, f"{norm:.6f}"] for i, (name, n, norm)
                            in enumerate(zip(run.dataset.classes, counts, norms))])

    @hookimpl
    def run_end(self, run):
        """The class centroids at the end of the run as the figure ``centroids`` (the marks of
        the paper's Fig. 3 t-SNE): ``centroids`` ``[C, D]`` in class order (a class never seen
        has a zero row), ``seen`` per class. Needs a core with ``record_figure``."""
        try:
            from ltcore import record_figure
        except ImportError:
            return
        bank = self.provider.bank
        record_figure(run, "centroids", {"centroids": bank.centroids.detach().float().cpu(),
                                         "seen": bank.initialized.cpu()})

    def state_dict(self) -> dict:
        """Whether the teacher's snapshot was taken, and the interpolation weights' generator
        (so that an epoch stopped at a step continues with the same weights)."""
        return {"teacher_snapshot": self.teacher_snapshot,
                "generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.teacher_snapshot = state["teacher_snapshot"]
        if state.get("generator") is not None and self.generator is not None:
            self.generator.set_state(state["generator"])

    # -- stage 1 ------------------------------------------------------------------------------

    def set_phase(self, epoch: int) -> None:
        """Warm-up before epoch T, interpolative from T: forward set and loss weights.

        The stage's classifier loss (ICCL's CE, or the loss of a plugin that replaced it) keeps
        the weight it was built with during the warm-up and gets ``w_u`` times it afterwards.
        """
        interpolative = epoch >= self.warmup_epochs
        if interpolative and epoch == self.warmup_epochs and self.warmup_epochs > 0:
            log.info("iccl: warm-up finished after %d epochs; interpolative branch on from "
                     "epoch %d", self.warmup_epochs, epoch + 1)
        self.interpolative = interpolative
        self.stage.views[MIX_ROLE].forward = interpolative
        classifier = self.stage.classifier_loss
        if classifier is not None:
            if self._classifier is not classifier:
                self._classifier, self._classifier_weight = classifier, classifier.weight
            factor = self.options.uniform_weight if interpolative else 1.0
            classifier.weight = factor * self._classifier_weight
        self.set_term_weights(interpolative)

    def set_term_weights(self, interpolative: bool) -> None:
        """Weights of ICCL's own terms in one phase (inactive terms get 0)."""
        opts = self.options
        self.terms["iccl-cc-warmup"].weight = 0.0 if interpolative else opts.warmup_centroid_weight
        for name, weight in zip(("iccl-ce-it", "iccl-cc-it"), opts.interpolative_weights()):
            self.terms[name].weight = weight if interpolative else 0.0

    def mix(self, step: "Step") -> None:
        """Make ``x^f`` from the augmented pair and keep the per-sample lambda (drawn for the
        global batch, of which this rank mixes its share)."""
        head, tail = step.images[self.head_role], step.images[TAIL_ROLE]
        alpha, beta = self.options.beta
        lam = sample_interpolation_weights(len(step.targets(self.head_role)), alpha,
                                           self.generator, device=head.device, beta=beta)
        step.extras[LAMBDA] = lam
        step.images[MIX_ROLE] = interpolate(head, tail, step.local(lam))

    def embed(self, step: "Step") -> None:
        """Projection embeddings of the uniform (and interpolated) images, if missing."""
        roles = [CLASSIFIER_ROLE, MIX_ROLE] if self.interpolative else [CLASSIFIER_ROLE]
        missing = [r for r in roles if r not in step.embeddings]
        if missing:
            with step.run.autocast():
                for role in missing:
                    step.embeddings[role] = step.run.embed(step.stage.model,
                                                           step.features[role]).float()

    def update_centroids(self, step: "Step") -> None:
        """Eq. 1 with the uniform branch's embeddings (the only un-mixed labelled ones)."""
        self.provider.update(step.embeddings[CLASSIFIER_ROLE], step.targets(CLASSIFIER_ROLE))

    def centroid_bias(self, step: "Step", labels_a, labels_b):
        """The plugins' logit biases for the centroid columns of the term being computed, per
        target label."""
        classes = torch.arange(len(self.provider.centroids), device=labels_a.device)
        no_samples = classes[:0]
        bias_a = step.contrastive_bias(labels_a, no_samples, classes)
        if bias_a is None or labels_b is labels_a:
            return bias_a, None
        return bias_a, step.contrastive_bias(labels_b, no_samples, classes)

    # -- stage 2 ------------------------------------------------------------------------------

    def snapshot_teacher(self, run: "Run") -> None:
        """Copy the stage-1 network into the teacher (once; a resumed stage keeps its own)."""
        if self.teacher_snapshot:
            return
        model = self.rebalancing.model
        if self.teacher is not None:
            if self.teacher_reuses_features:
                self.teacher.load_state_dict(model.classifier.state_dict())
            else:
                self.teacher.backbone.load_state_dict(model.backbone.state_dict())
                self.teacher.classifier.load_state_dict(model.classifier.state_dict())
            self.teacher.eval()
        if self.options.reset_classifier:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(run.epoch_seed(self.rebalancing, 0) + SEED_OFFSET)
                for module in model.classifier.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
                if hasattr(model.classifier, "weight") and not hasattr(model.classifier,
                                                                       "reset_parameters"):
                    nn.init.kaiming_uniform_(model.classifier.weight, a=5 ** 0.5)
        self.teacher_snapshot = True

    @torch.no_grad()
    def teacher_logits(self, step: "Step") -> torch.Tensor:
        """``o^T``: the frozen stage-1 network's logits for the classifier view."""
        self.teacher.eval()
        with step.run.autocast():
            if self.teacher_reuses_features:
                logits = self.teacher(step.features[CLASSIFIER_ROLE])
            else:
                features = self.teacher.backbone(step.images[CLASSIFIER_ROLE])
                logits = step.gather(self.teacher.classifier(features))
        return logits.float()


# -- loss terms ---------------------------------------------------------------------------------


def _zero(step: "Step") -> torch.Tensor:
    return step.logits[CLASSIFIER_ROLE].new_zeros(())


def warmup_centroid_term(state: ICCLRun) -> LossTerm:
    """``L_cc = -log p(c^{y^h} | x^h)`` on the uniform view; active during the warm-up."""
    name, tau = "iccl-cc-warmup", state.options.temperature

    def fn(step: "Step") -> torch.Tensor:
        if state.interpolative:
            return _zero(step)
        labels = step.targets(CLASSIFIER_ROLE)
        bias, _ = state.centroid_bias(step, labels, labels)
        return centroid_contrastive_loss(step.embeddings[CLASSIFIER_ROLE], state.provider.centroids,
                                         labels, labels, 1.0, tau, logit_bias=bias)

    return LossTerm(name, fn, PLUGIN, state.options.warmup_centroid_weight, kind="contrastive",
                    rebalanceable=True)


def interpolative_centroid_term(state: ICCLRun) -> LossTerm:
    """``L_cc^it`` (eq. 5) on the interpolated view; active after the warm-up."""
    name, tau = "iccl-cc-it", state.options.temperature

    def fn(step: "Step") -> torch.Tensor:
        if not state.interpolative:
            return _zero(step)
        labels_a, labels_b = step.targets(MIX_ROLE), step.labels[PAIRED]
        bias_a, bias_b = state.centroid_bias(step, labels_a, labels_b)
        return centroid_contrastive_loss(step.embeddings[MIX_ROLE], state.provider.centroids,
                                         labels_a, labels_b, step.extras[LAMBDA], tau,
                                         logit_bias=bias_a, logit_bias_b=bias_b)

    return LossTerm(name, fn, PLUGIN, state.options.interpolative_weights()[1],
                    kind="contrastive", rebalanceable=True)


def interpolative_ce_term(state: ICCLRun) -> LossTerm:
    """``L_ce^it`` (eq. 7) on the interpolated view's logits; active after the warm-up."""

    def fn(step: "Step") -> torch.Tensor:
        if not state.interpolative:
            return _zero(step)
        return interpolative_cross_entropy(step.logits[MIX_ROLE], step.targets(MIX_ROLE),
                                           step.labels[PAIRED], step.extras[LAMBDA])

    return LossTerm("iccl-ce-it", fn, PLUGIN, state.options.interpolative_weights()[0])


def distillation_term(state: ICCLRun) -> LossTerm:
    """Eq. 9 on the classifier view: ``(1 - w_d) CE + w_d tau_d^2 KL(teacher || student)``."""
    opts = state.options

    def fn(step: "Step") -> torch.Tensor:
        logits, labels = step.logits[CLASSIFIER_ROLE], step.targets(CLASSIFIER_ROLE)
        if state.teacher is None:
            return F.cross_entropy(logits, labels)
        return distillation_loss(logits, state.teacher_logits(step), labels,
                                 opts.distill_weight, opts.distill_temperature)

    return LossTerm("iccl-distill", fn, PLUGIN, 1.0, kind="classifier")


# -- assembling ---------------------------------------------------------------------------------


def setup(run: "Run", options: "Options") -> ICCLRun:
    """Add ICCL's branches to the ``train`` stage and its rebalancing stage after it."""
    stage = run.main_stage
    if stage.sampler != run.config.sampler:
        raise PluginError(f"plugin 'iccl' trains stage 'train' with its paired sampler, but "
                          f"another selected plugin already set that stage's sampler to "
                          f"{stage.sampler!r}; the two cannot share one stage")
    state = run.register(ICCLRun(run, options), PLUGIN)
    agnostic = run.config.sampler if run.config.sampler != "iccl-paired" else "instance-balanced"
    stage.sampler = "iccl-paired"
    stage.sampler_options = {"gamma": options.gamma, "agnostic": agnostic}
    if options.tail_sampler != "class-aware":
        stage.sampler_options["tail"] = options.tail_sampler

    view = run.config.views.classifier
    run.classifier_view(stage)
    run.projection_head(stage.model)
    if options.head_view == "separate":
        stage.add_view(HEAD_ROLE, view, source="sample", forward=False)
    stage.add_view(TAIL_ROLE, view, source=PAIRED, forward=False)
    stage.add_view(MIX_ROLE, None, source="sample", forward=state.interpolative, classify=True)

    stage.set_classifier_loss(cross_entropy_term("ce", PLUGIN), default=True)
    for term in (warmup_centroid_term(state), interpolative_ce_term(state),
                 interpolative_centroid_term(state)):
        state.terms[term.name] = stage.add_loss(term)
    state.set_term_weights(state.interpolative)
    if state.warmup_epochs >= stage.epochs:
        log.warning("iccl: warmup_epochs %d >= the %d epochs of stage 'train': the "
                    "interpolative branch never starts", state.warmup_epochs, stage.epochs)
    if options.classifier_epochs > 0:
        add_rebalancing_stage(run, state)
    return state


def add_rebalancing_stage(run: "Run", state: ICCLRun) -> "Stage":
    """Stage ``classifier``: eq. 9 on the class-aware sampler with gamma', cosine lr."""
    opts, cfg = state.options, run.config
    frozen = opts.classifier_trainable == "classifier"
    stage = run.new_stage(STAGE, opts.classifier_epochs, plugin=PLUGIN,
                          epochs_setting=f"{PLUGIN}.classifier_epochs",
                          trainable="classifier" if frozen else "all",
                          sampler_options={"gamma": opts.classifier_gamma})
    if not frozen:
        state.fine_tune = FineTuneGroups(opts.encoder_lr_scale)
    stage.sampler = "class-aware"
    stage.optim = attrs.evolve(cfg.optim, lr=cfg.optim.lr * opts.classifier_lr_scale)
    stage.schedule = ScheduleConfig(kind="cosine", warmup_epochs=0)
    run.classifier_view(stage)
    stage.set_classifier_loss(distillation_term(state), default=True)
    state.rebalancing = run.add_stage(stage, after=state.stage.name)
    if opts.distill_weight > 0:
        state.teacher_reuses_features = frozen or opts.teacher == "classifier"
        if state.teacher_reuses_features:
            teacher = copy.deepcopy(stage.model.classifier)
        else:
            teacher = copy.deepcopy(stage.model)
            teacher.heads = nn.ModuleDict()
        teacher.requires_grad_(False)
        state.teacher = run.add_module(TEACHER_MODULE, teacher.eval())
    return stage
