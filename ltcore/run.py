"""The objects plugins assemble in ``setup_run`` and the loss terms see every step.

A :class:`Run` holds the dataset, the main model and an ordered list of :class:`Stage` objects.
Each stage names its views (augmentation pipeline per *role*), its loss terms and its sampler.
Every step the engine stacks the images of all forward roles into one batch for the backbone (so
BatchNorm sees all views), computes classifier logits for the ``classify`` roles and normalised
projection embeddings for the ``embed`` roles, lets the selected plugins adjust them, and sums the
weighted loss terms. Loss terms are plain callables of a :class:`Step`.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from .config import OptimConfig, RunConfig, ScheduleConfig
from .data import Dataset
from .errors import PluginError
from .models import ModelBundle, MLPHead
from .plugins import Plugins, RunHooks

CLASSIFIER_ROLE = "cls"
PROJECTION_HEAD = "projection"


@attrs.define
class ViewSpec:
    """One augmented view per sample: ``pipeline`` applied to the images of index ``source``.

    ``forward`` views go through the stage model's backbone in the stacked forward; the logits of
    ``classify`` views and the normalised projection of ``embed`` views are computed for the losses.
    """

    role: str
    pipeline: str
    source: str = "sample"
    forward: bool = True
    classify: bool = False
    embed: bool = False


@attrs.define(eq=False)
class LossTerm:
    """A weighted loss: ``weight * fn(step)``, logged as ``train/loss/<name>``.

    ``kind`` is ``classifier``, ``contrastive`` or ``other``; a ``rebalanceable`` contrastive term
    adds ``run.contrastive_bias(...)`` to its logits, which is how RCL composes onto it.
    """

    name: str
    fn: Callable[["Step"], torch.Tensor]
    plugin: str
    weight: float = 1.0
    kind: str = attrs.field(default="other",
                            validator=attrs.validators.in_(("classifier", "contrastive", "other")))
    rebalanceable: bool = False


@attrs.define(eq=False)
class Stage:
    """A phase of training with its own model, views, losses, sampler and optimiser settings.

    ``trainable`` is ``"all"``, ``"classifier"`` (backbone frozen, in eval mode) or a callable
    returning the parameter groups to optimise.
    """

    name: str
    epochs: int
    model: ModelBundle
    optim: OptimConfig
    schedule: ScheduleConfig
    sampler: str
    plugin: str
    views: dict[str, ViewSpec] = attrs.Factory(dict)
    losses: list[LossTerm] = attrs.Factory(list)
    trainable: Any = "all"
    sampler_options: dict = attrs.Factory(dict)
    evaluate: bool = True
    classifier_loss_is_default: bool = False

    def add_view(self, role: str, pipeline: str, *, source: str = "sample", forward: bool = True,
                 classify: bool = False, embed: bool = False) -> str:
        """Add a view, or widen an existing one with the same role and pipeline."""
        old = self.views.get(role)
        if old is not None:
            if (old.pipeline, old.source) != (pipeline, source):
                raise PluginError(f"stage {self.name!r}: view {role!r} is already "
                                  f"{old.pipeline!r} of {old.source!r}, not {pipeline!r}")
            old.classify |= classify
            old.embed |= embed
            old.forward |= forward
            return role
        self.views[role] = ViewSpec(role, pipeline, source, forward, classify, embed)
        return role

    @property
    def classifier_loss(self) -> LossTerm | None:
        return next((t for t in self.losses if t.kind == "classifier"), None)

    def add_loss(self, term: LossTerm) -> LossTerm:
        if any(t.name == term.name for t in self.losses):
            raise PluginError(f"stage {self.name!r} already has a loss term {term.name!r} "
                              f"(from plugin {self.loss(term.name).plugin!r}); plugin "
                              f"{term.plugin!r} adds another")
        self.losses.append(term)
        return term

    def loss(self, name: str) -> LossTerm:
        return next(t for t in self.losses if t.name == name)

    def set_classifier_loss(self, term: LossTerm, *, default: bool = False) -> None:
        """Set the stage's one classifier loss.

        A method sets its recipe's loss with ``default=True`` (BCL: LA-CE); a plugin chosen for
        the classifier loss (``la``, ``balanced-softmax``, ``ldam-drw``...) replaces such a default
        and takes over its weight. Two non-default classifier losses are an error naming both.
        """
        term.kind = "classifier"
        current = self.classifier_loss
        if current is None:
            self.losses.append(term)
            self.classifier_loss_is_default = default
            return
        if default and not self.classifier_loss_is_default:
            return
        if not default and not self.classifier_loss_is_default:
            raise PluginError(f"plugins {current.plugin!r} and {term.plugin!r} both set the "
                              f"classifier loss of stage {self.name!r} ({current.name!r} and "
                              f"{term.name!r}); select one of them")
        if not default:
            term.weight = current.weight
        self.losses[self.losses.index(current)] = term
        self.classifier_loss_is_default = default

    @property
    def contrastive_losses(self) -> list[LossTerm]:
        return [t for t in self.losses if t.kind == "contrastive"]


@attrs.define(eq=False)
class ContrastSet:
    """What a contrastive loss shows ``contrastive_logit_bias`` implementations.

    Columns are the loss's contrast entries, samples first then prototypes (``is_prototype``).
    """

    run: "Run"
    loss: str
    plugin: str
    anchor_labels: torch.Tensor
    column_labels: torch.Tensor
    is_prototype: torch.Tensor


@attrs.define(eq=False)
class Step:
    """One training step's tensors, shared by the run-time hooks and the loss terms."""

    run: "Run"
    stage: Stage
    epoch: int
    iteration: int
    indices: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    images: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor] = attrs.Factory(dict)
    logits: dict[str, torch.Tensor] = attrs.Factory(dict)
    embeddings: dict[str, torch.Tensor] = attrs.Factory(dict)
    extras: dict[str, Any] = attrs.Factory(dict)
    """Per-step values plugins pass between their hooks and loss terms (e.g. mixing weights)."""

    def targets(self, role: str) -> torch.Tensor:
        """Labels of the samples behind view ``role``."""
        return self.labels[self.stage.views[role].source]

    def embedding_roles(self) -> list[str]:
        return [r for r, v in self.stage.views.items() if v.embed]

    def stacked_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All contrastive views stacked view-major ([V*B, D]) with their labels."""
        roles = self.embedding_roles()
        return (torch.cat([self.embeddings[r] for r in roles]),
                torch.cat([self.targets(r) for r in roles]))


class Run:
    """A training run being assembled by the selected plugins and then trained by the engine."""

    def __init__(self, config: RunConfig, options: dict[str, Any], plugins: Plugins,
                 selected: list[str], dataset: Dataset, device: torch.device):
        self.config = config
        self.options = options
        self.plugins = plugins
        self.selected = selected
        self.hooks: RunHooks = plugins.hooks(selected)
        self.dataset = dataset
        self.device = device
        self.class_counts = dataset.class_counts.to(device)
        self.class_prior = self.class_counts.float() / self.class_counts.sum()
        self.modules = nn.ModuleDict()
        self.model = self.build_model(config.model.classifier)
        self.add_module("model", self.model)
        self.stages: list[Stage] = [self.new_stage("train", config.epochs, plugin="core")]
        self.tracker = None
        self.state: dict[str, Any] = {}

    # -- assembling ---------------------------------------------------------------------------

    @property
    def main_stage(self) -> Stage:
        """The stage named ``train``: the one the selected methods train their losses in."""
        return self.stage("train")

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise PluginError(f"no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")

    def new_stage(self, name: str, epochs: int, *, plugin: str, model: ModelBundle | None = None,
                  **changes) -> Stage:
        """A stage with the run's optimiser, schedule and sampler settings (not yet added)."""
        values = {"optim": attrs.evolve(self.config.optim),
                  "schedule": attrs.evolve(self.config.schedule),
                  "sampler": self.config.sampler, **changes}
        return Stage(name=name, epochs=epochs, model=model or self.model, plugin=plugin, **values)

    def add_stage(self, stage: Stage, *, before: str | None = None, after: str | None = None) -> Stage:
        if any(s.name == stage.name for s in self.stages):
            raise PluginError(f"plugin {stage.plugin!r} adds stage {stage.name!r}, which "
                              f"plugin {self.stage(stage.name).plugin!r} already added")
        anchor = before or after
        position = len(self.stages)
        if anchor is not None:
            position = self.stages.index(self.stage(anchor)) + (0 if before else 1)
        self.stages.insert(position, stage)
        return stage

    def option(self, plugin: str) -> Any:
        """The resolved options of a selected plugin."""
        return self.options[plugin]

    def build(self, kind: str, name: str, **options) -> Any:
        """Instantiate a registered component: ``factory(run, **options)``."""
        return self.plugins.component(kind, name).obj(self, **options)

    def build_model(self, classifier: str, backbone: str | None = None) -> ModelBundle:
        """A fresh backbone + classifier as configured (seeded by the caller)."""
        cfg = self.config.model
        net = self.plugins.component("backbone", backbone or cfg.backbone).obj(self.dataset.channels)
        head = self.plugins.component("head", classifier).obj
        options = {"scale": cfg.cosine_scale} if classifier == "cosine" else {}
        return ModelBundle(net, head(net.feature_dim, self.dataset.num_classes, **options)).to(self.device)

    def projection_head(self, model: ModelBundle | None = None) -> nn.Module:
        """The shared projection MLP of ``model`` (created on first use)."""
        model = model or self.model
        if PROJECTION_HEAD not in model.heads:
            cfg = self.config.model
            model.heads[PROJECTION_HEAD] = MLPHead(model.feature_dim, cfg.projection_dim,
                                                   cfg.projection_hidden).to(self.device)
        return model.heads[PROJECTION_HEAD]

    def classifier_view(self, stage: Stage | None = None) -> str:
        """Add (or reuse) the classifier view ``cls`` with the configured pipeline."""
        stage = stage or self.main_stage
        return stage.add_view(CLASSIFIER_ROLE, self.config.views.classifier, classify=True)

    def contrastive_views(self, count: int = 2, stage: Stage | None = None) -> list[str]:
        """Add (or reuse) ``count`` contrastive views ``con0..`` and the projection head."""
        stage = stage or self.main_stage
        self.projection_head(stage.model)
        return [stage.add_view(f"con{i}", self.config.views.contrastive, embed=True)
                for i in range(count)]

    def add_module(self, name: str, module: nn.Module) -> nn.Module:
        """Attach a stateful module (memory bank, teacher, centroids): moved to the device and
        saved in every checkpoint."""
        if name in self.modules:
            raise PluginError(f"a module named {name!r} is already attached to the run")
        self.modules[name] = module.to(self.device)
        return module

    # -- used while training ------------------------------------------------------------------

    def contrastive_bias(self, contrast: ContrastSet) -> torch.Tensor | None:
        """Sum of the selected plugins' ``contrastive_logit_bias`` for this contrast set."""
        biases = [b for b in self.hooks.contrastive_logit_bias(contrast=contrast) if b is not None]
        if not biases:
            return None
        total = biases[0]
        for b in biases[1:]:
            total = total + b
        return total

    def embed(self, model: ModelBundle, features: torch.Tensor) -> torch.Tensor:
        """L2-normalised projection of backbone features."""
        return F.normalize(model.heads[PROJECTION_HEAD](features), dim=1)
