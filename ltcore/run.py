"""The objects plugins assemble in ``setup_run`` and the loss terms see every step.

A :class:`Run` holds the dataset, the main model and an ordered list of :class:`Stage` objects.
Each stage names its views (augmentation pipeline per *role*), its loss terms and its sampler.
Every step the engine stacks the images of all forward roles into one batch for the backbone (so
BatchNorm sees all views), computes classifier logits for the ``classify`` roles and normalised
projection embeddings for the ``embed`` roles, lets the selected plugins adjust them, and sums the
weighted loss terms. Loss terms are plain callables of a :class:`Step`.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from .config import OptimConfig, RunConfig, ScheduleConfig, Settings
from .data import Dataset
from .distributed import SINGLE, World
from .errors import PluginError
from .models import MLPHead, ModelBundle
from .plugins import Plugins
from .speed import Speed

if TYPE_CHECKING:
    from .evaluation import Evaluation
    from .pretrained import InitialWeights
    from .tasks import Task
    from .tracking import Tracker

CLASSIFIER_ROLE = "cls"
PROJECTION_HEAD = "projection"


def epoch_seed(seed: int, stage_index: int, epoch: int) -> int:
    """The seed of one epoch's sampling and augmentation (independent of any earlier epoch)."""
    return (seed * 1_000_003 + stage_index * 10_007 + epoch) % (2 ** 63)


@attrs.define
class ViewSpec:
    """One augmented view per sample: ``pipeline`` applied to the images of index ``source``.

    ``forward`` views go through the stage model's backbone in the stacked forward; the logits of
    ``classify`` views and the normalised projection of ``embed`` views are computed for the losses.
    """

    role: str
    pipeline: str | None
    source: str = "sample"
    forward: bool = True
    classify: bool = False
    embed: bool = False


@attrs.define(eq=False)
class LossTerm:
    """A weighted loss: ``weight * fn(step)``, logged as ``train/loss/<name>``.

    ``kind`` is ``classifier``, ``contrastive`` or ``other``. A ``rebalanceable`` contrastive
    term adds :meth:`Step.contrastive_bias` to its logits, which is how RCL composes onto it. A
    classifier term with ``label_smoothing`` applies ``loss.label_smoothing`` (the
    cross-entropy family); ``loss.label_smoothing`` is refused for stages whose classifier loss
    does not. Call the term (``term(step)``), not ``fn``: the step then knows which term is
    computed.
    """

    name: str
    fn: Callable[["Step"], torch.Tensor]
    plugin: str
    weight: float = 1.0
    kind: str = attrs.field(default="other",
                            validator=attrs.validators.in_(("classifier", "contrastive", "other")))
    rebalanceable: bool = False
    label_smoothing: bool = False

    def __call__(self, step: "Step") -> torch.Tensor:
        """``fn(step)`` with ``step.term`` set to this term."""
        outer, step.term = step.term, self
        try:
            return self.fn(step)
        finally:
            step.term = outer


@attrs.define(eq=False)
class Stage:
    """A phase of training with its own model, views, losses, sampler and optimiser settings.

    ``trainable`` is ``"all"`` (every trainable parameter of the model) or ``"classifier"``
    (the backbone frozen, in eval mode, without gradient); plugins change the optimiser's
    parameter groups through the ``adjust_parameter_groups`` hook.
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
    trainable: str = attrs.field(default="all",
                                 validator=attrs.validators.in_(("all", "classifier")))
    sampler_options: dict = attrs.Factory(dict)
    evaluate: bool = True
    classifier_loss_is_default: bool = False
    epochs_setting: str = ""
    """The configuration key that sets ``epochs`` (e.g. ``crt.epochs``), shown in the run's
    plan; ``epochs`` (``--epochs``) for the main stage."""

    def add_view(self, role: str, pipeline: str | None, *, source: str = "sample",
                 forward: bool = True, classify: bool = False, embed: bool = False) -> str:
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

    ``term`` is the loss term being computed. Columns are its contrast entries, samples first
    then prototypes (``is_prototype``).
    """

    step: "Step"
    term: LossTerm
    anchor_labels: torch.Tensor
    column_labels: torch.Tensor
    is_prototype: torch.Tensor

    @property
    def run(self) -> "Run":
        return self.step.run


@attrs.define(eq=False)
class Step:
    """One training step's tensors, shared by the run-time hooks and the loss terms.

    In a distributed run (:mod:`ltcore.distributed`) ``indices`` and ``labels`` hold the global
    batch, every rank's samples rank by rank, and ``images`` this rank's share of it; from
    ``adjust_embeddings`` on, ``features``, ``logits`` and ``embeddings`` hold the global batch
    too (gathered, with gradients flowing back to each rank). A per-sample tensor a plugin
    makes from ``images`` becomes global with :meth:`gather`; a global one is cut to this
    rank's share with :meth:`local`.
    """

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
    term: LossTerm | None = None
    """The loss term being computed (set while ``term(step)`` runs)."""
    shares: list[int] | None = None
    """How many samples of the global batch each rank holds (None: one process)."""
    mix: Any = None
    """The batch's mixup or CutMix (:class:`ltcore.engine.mixing.Mix`: ``partner``, ``lam``,
    ``box``) when ``mix.*`` mixed its classifier views, else None."""

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of ``tensor`` (one row per sample of this rank's share), as the
        global batch; gradients flow back to this rank's rows. The tensor in one process."""
        return self.run.world.gather(tensor, self.shares)

    def local(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global per-sample ``tensor``. The tensor in one process."""
        return self.run.world.local(tensor)

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

    def contrastive_bias(self, anchor_labels: torch.Tensor, sample_labels: torch.Tensor,
                         prototype_labels: torch.Tensor | None = None) -> torch.Tensor | None:
        """The plugins' bias for the logits of the contrastive term being computed.

        Columns are the term's contrast entries: samples (``sample_labels``), then prototypes
        (``prototype_labels``); the bias broadcasts to ``[anchors, columns]``, or is None.
        """
        if self.term is None:
            raise PluginError("Step.contrastive_bias is called from a loss term: call the term "
                              "(term(step)), not its fn")
        columns = (sample_labels if prototype_labels is None
                   else torch.cat([sample_labels, prototype_labels]))
        is_prototype = torch.zeros(len(columns), dtype=torch.bool, device=columns.device)
        if prototype_labels is not None:
            is_prototype[len(sample_labels):] = True
        return self.run.contrastive_bias(ContrastSet(self, self.term, anchor_labels, columns,
                                                     is_prototype))


class RunRecorder:
    """Records of the current run beyond its per-epoch metrics: tags, tables and files.

    Everything goes to the run's MLflow parent run and its folder. A run that is not being
    trained (built to evaluate a saved model, or in a test) records nothing.
    """

    def __init__(self):
        self._tracker: Tracker | None = None
        self._run_id: str | None = None
        self.folder: Path | None = None
        """The run's folder (``<output>/<run id>``) while it trains, else None."""

    def attach(self, tracker: Tracker, run_id: str, folder: Path) -> None:
        self._tracker, self._run_id, self.folder = tracker, run_id, folder

    @property
    def active(self) -> bool:
        return self._tracker is not None

    def tags(self, tags: dict[str, Any]) -> None:
        """Set tags on the run."""
        if self.active:
            self._tracker.set_tags(self._run_id, tags)

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        """Log a file as an artifact of the run (under ``folder``)."""
        if self.active:
            self._tracker.log_artifact(self._run_id, str(path), folder)

    def table(self, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path | None:
        """Write a CSV table ``name`` (``"rcl/compression.csv"``) into the run's folder under
        ``artifacts/`` and log it; returns its path."""
        from .files import write_csv

        if not self.active:
            return None
        path = self.folder / "artifacts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(path, header, rows)
        self.artifact(path, str(Path(name).parent) if Path(name).parent != Path(".") else None)
        return path


class Run:
    """A training run being assembled by the selected plugins and then trained by the engine."""

    def __init__(self, settings: Settings, plugins: Plugins, selected: list[str],
                 dataset: Dataset, device: torch.device, world: World = SINGLE,
                 initial_weights: InitialWeights | None = None):
        self.settings = settings
        self.world = world
        """The processes training this run together (:mod:`ltcore.distributed`)."""
        self.config: RunConfig = settings.run
        self.options: dict[str, Any] = settings.plugins
        self.plugins = plugins
        self.selected = selected
        self.dataset = dataset
        task = plugins.component("task", dataset.task)
        self.task: Task = task.obj
        """What the run predicts (:class:`ltcore.Task`), named by its dataset."""
        self.task.check(self, task.plugin)
        self.run_plugins = plugins.for_run([p for p in selected if p not in self.task.adopts])
        self.hooks = self.run_plugins.hook
        self.device = device
        self.speed = Speed.resolve(self.config.speed, device)
        """The fast path's switches for this device (:mod:`ltcore.speed`)."""
        self.class_counts = dataset.class_counts.to(device)
        self.class_prior = self.class_counts.float() / self.class_counts.sum()
        self.modules = nn.ModuleDict()
        self.initial_weights = initial_weights
        """Where the configured backbone's weights start (``model.pretrained``; None: random,
        or restored from a checkpoint)."""
        self.model_notes: list[str] = []
        """What the plan says of the model: the pretrained weights loaded, the frozen part."""
        self.model = self.build_model(self.config.model.classifier)
        self.add_module("model", self.model)
        self.stages: list[Stage] = [self.new_stage("train", self.config.epochs, plugin="core",
                                                       epochs_setting="epochs")]
        self.metrics: list[str] = []
        """Registered metrics the selected plugins asked for, besides ``eval.metrics``."""
        self.recorder = RunRecorder()
        self.run_id: str | None = None
        """The MLflow id of the run's parent run while it is trained."""

    @property
    def run_name(self) -> str:
        """``bcl+rcl-digits-lt-s0-1a2b3c4d``: the plugins, dataset, seed and the id's first 8
        characters; the MLflow run's name and its folder's. A backbone named by specification
        comes after the dataset (``ce-digits-lt-timm.resnet18-s0-...``). Path separators and
        control characters become ``-``: the run's folder is one folder under ``output``."""
        from .files import file_name

        library, _, model = self.config.model.backbone.partition(":")
        backbone = (f"-{library}.{Path(model).stem if model.endswith('.json') else model}"
                    if model else "")
        name = f"{'+'.join(self.selected)}-{self.dataset.name}{backbone}-s{self.config.seed}"
        return file_name(f"{name}-{self.run_id[:8]}" if self.run_id else name)

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

    def component(self, kind: str, name: str) -> Any:
        """The registered component ``name`` of ``kind`` (a view pipeline, a metric, a factory)."""
        return self.plugins.component(kind, name).obj

    def build(self, kind: str, name: str, /, **options) -> Any:
        """Instantiate a registered component: ``factory(run, **options)``."""
        return self.component(kind, name)(self, **options)

    def build_model(self, classifier: str, backbone: str | None = None) -> ModelBundle:
        """A fresh backbone + classifier as configured (seeded by the caller). The configured
        backbone (``backbone`` None or ``model.backbone``) gets ``model.backbone_options``, its
        initial weights and ``model.freeze``; another backbone is built plain."""
        from .backbones import resolve
        from .pretrained import load_into

        cfg = self.config.model
        configured = backbone is None or backbone == cfg.backbone
        spec = resolve(self.plugins, cfg.backbone if configured else backbone,
                       cfg.backbone_options if configured else {})
        weights = self.initial_weights if configured else None
        head = self.plugins.component("head", classifier)
        net = spec.build(self.dataset.channels, pretrained=weights is not None and weights.hub)
        if weights is not None:
            note = "pretrained: " + (weights.describe() if weights.hub else
                                     load_into(net, weights, cfg.pretrained_strict, spec.name))
            if note not in self.model_notes:
                self.model_notes.append(note)
        options = {}
        if classifier == "cosine":
            options = {"scale": cfg.cosine_scale}
        elif classifier == "linear":
            options = {"init": (getattr(net, "classifier_init", "default")
                                if cfg.classifier_init == "auto" else cfg.classifier_init)}
        model = ModelBundle(net, head.obj(net.feature_dim, self.dataset.num_classes, **options),
                            freeze=cfg.freeze if configured else "none")
        for parameter in model.frozen_parameters():
            parameter.requires_grad_(False)
        model.architecture = {"backbone": spec.name, "backbone_plugin": spec.plugin,
                              "backbone_options": spec.options,
                              "in_channels": self.dataset.channels, "classifier": head.name,
                              "classifier_plugin": head.plugin, "classifier_options": options}
        model.to(self.device)
        self.speed.prepare_model(model)
        return model

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
        """Add (or reuse) ``count`` contrastive views ``con0..`` and the projection head:
        ``views.contrastive`` for each, ``views.contrastive_second`` (when set) for ``con1``."""
        stage = stage or self.main_stage
        self.projection_head(stage.model)
        views = self.config.views
        return [stage.add_view(f"con{i}", views.contrastive_second if i == 1 and
                               views.contrastive_second else views.contrastive, embed=True)
                for i in range(count)]

    def add_module(self, name: str, module: nn.Module) -> nn.Module:
        """Attach a stateful module (memory bank, teacher, centroids): moved to the device and
        saved in every checkpoint and in the final model."""
        if name in self.modules:
            raise PluginError(f"a module named {name!r} is already attached to the run")
        self.modules[name] = module.to(self.device)
        return module

    def register(self, obj: Any, name: str) -> Any:
        """Add a plugin object for this run: its ``@hookimpl`` methods take part in the run's
        hooks, and its ``state_dict()`` / ``load_state_dict(state)`` (plain values and tensors)
        are saved in every checkpoint and in the final model under ``name``."""
        return self.run_plugins.register(obj, name)

    def plugin_object(self, name: str) -> Any:
        """The plugin object registered for this run under ``name``."""
        if name not in self.run_plugins.objects:
            raise PluginError(f"no plugin object {name!r} is registered in this run; registered: "
                              f"{', '.join(self.run_plugins.objects) or 'none'}")
        return self.run_plugins.objects[name]

    def add_metrics(self, *names: str) -> None:
        """Compute these registered metrics in this run's evaluations (besides
        ``eval.metrics``)."""
        for name in names:
            self.plugins.component("metric", name)
            if name not in self.metrics:
                self.metrics.append(name)

    # -- used while training ------------------------------------------------------------------

    def contrastive_bias(self, contrast: ContrastSet) -> torch.Tensor | None:
        """Sum of the ``contrastive_logit_bias`` implementations for this contrast set."""
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

    @property
    def tracking_uri(self) -> str:
        """The MLflow store this run records to: ``tracking.uri``, else
        ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory."""
        from .tracking import resolve_uri

        return resolve_uri(self.config.tracking.uri)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype :meth:`autocast` computes matrix products in: bf16 on CUDA (``precision``
        auto or bf16) and on the CPU with ``precision = "bf16"``, float16 with ``precision =
        "fp16"`` (its gradients scaled, :mod:`ltcore.engine.updates`), else float32."""
        precision = self.config.precision
        if precision == "fp16":
            return torch.float16
        if precision == "bf16" or (self.device.type == "cuda" and precision == "auto"):
            return torch.bfloat16
        return torch.float32

    def autocast(self):
        """The run's mixed precision as a context: autocast to :attr:`compute_dtype` where that
        is bf16 or float16, else nothing."""
        if self.compute_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def epoch_seed(self, stage: Stage, epoch: int) -> int:
        """The seed of ``epoch`` of ``stage``, from the run seed: derive a plugin's own random
        streams from it (add or mix in a constant of the plugin) so that a resumed run draws the
        same numbers."""
        return epoch_seed(self.config.seed, self.stages.index(stage), epoch)

    def evaluate(self, model: ModelBundle | None = None, splits: Sequence[str] | None = None, *,
                 stage: Stage | None = None, final: bool = False,
                 features: bool = False) -> Evaluation:
        """Evaluate ``model`` (default: the run's) on ``splits`` (default: validation and test)
        through the one evaluation path: un-augmented images, ``adjust_eval_logits``, post-hoc
        logit adjustment. See :func:`ltcore.evaluation.evaluate`."""
        from .evaluation import evaluate

        return evaluate(self, model or self.model, splits, stage=stage, final=final,
                        features=features)
