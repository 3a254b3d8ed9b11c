"""Hook specifications: every way a plugin extends ltcore.

A plugin is a module (or object) whose functions carry ``@ltcore.hookimpl`` and are named
after the specs below. Installed plugins are found through the ``ltcore`` entry-point group;
the built-in baselines are plugins of the same kind, registered by the core.

There are four families of hooks.

Registration hooks (``register_*``)
    Called once for *every installed* plugin when the plugin manager starts. Each receives a
    ``register`` callable; the component names live in one namespace per kind, and two plugins
    registering the same name is an error naming both. Components of any installed plugin can
    be used by name in any run (``--set sampler=class-aware``), whether or not the plugin that
    registered them was selected with ``--plugin``. Factories are not called at registration
    time, so registering is cheap.

Run assembly (``setup_run``, then ``compose_run``)
    Called only for the plugins selected with ``--plugin``. In ``setup_run`` each adds its own
    method to the :class:`~ltcore.Run`; in ``compose_run``, called after every ``setup_run``,
    plugins that act on what the others built (RCL rebalances their contrastive terms, ProCo
    adds its prototype loss beside them) do so.

Run-time hooks
    Called while a run trains or is evaluated, for the selected plugins and the run's own
    plugin objects (:meth:`ltcore.Run.register`), so one plugin can adjust what another
    produced: images, embeddings, classifier logits (in training and in evaluation), the logits
    of any contrastive loss and the optimiser's parameter groups.

Lifecycle hooks
    ``run_start``/``run_end``/``run_failed``, ``stage_start``/``stage_end``,
    ``epoch_start``/``epoch_end`` and ``step_end`` for EMA updates, memory-bank writes, schedule
    switches and the like.

Order. Every hook collects the results of all implementations (none is ``firstresult``). Within
one hook, implementations run in ``--plugin`` order, with the core first; the run's plugin
objects run before the plugin modules, the most recently registered first (pluggy's rule: the
last registered is called first; ltcore registers the selected plugins from the last to the
first). ``@hookimpl(tryfirst=True)`` / ``trylast=True`` move one implementation to the front or
the back where a plugin must see or produce something before the others (ICCL makes its
embeddings before RCL compresses them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    import torch

    from .evaluation import Evaluation
    from .protocols import (
        BackboneFactory, DatasetFactory, HeadFactory, LossFactory, MemoryBankFactory, Metric,
        OptimizerFactory, PrototypeProviderFactory, RebalancerFactory, Register,
        RegisterOptions, RegisterPreset, RegisterReference, RegisterTable, SamplerFactory,
        StageFactory, ViewPipeline,
    )
    from .run import ContrastSet, Run, Stage, Step
    from .tasks import Task

hookspec = pluggy.HookspecMarker("ltcore")


# -- registration ---------------------------------------------------------------------------


@hookspec
def register_datasets(register: Register[DatasetFactory]) -> None:
    """Register datasets: ``register(name, factory, doc="")``.

    ``factory(config: RunConfig) -> Dataset`` builds the training split (long-tailed at
    ``config.imbalance_factor``, or as it is with ``natural``) and the validation/test splits;
    the dataset's ``notes`` and ``warnings`` tell the plan how they were made. A factory may
    have an attribute ``class_counts(config) -> list[int]``, the training split's per-class
    counts from its construction alone, and ``class_names``, its classes' names: ``ltrun
    datasets`` then prints them without reading (or downloading) any image.
    """


@hookspec
def register_backbones(register: Register[BackboneFactory]) -> None:
    """Register feature extractors: ``register(name, factory, doc="")``.

    ``factory(in_channels: int, **options) -> torch.nn.Module`` with an integer attribute
    ``feature_dim``. ``options`` are ``model.backbone_options``, plus ``pretrained=True`` for
    ``model.pretrained = hub`` (a factory without published weights does not take it; ltcore
    then refuses in one line, as for an option a factory does not name). Since ltcore 1.2; a
    factory taking ``in_channels`` alone still works while no option is set. Optional
    attributes: ``classifier_init`` (``default`` | ``kaiming_normal``: the initialisation its
    reference code gives the linear classifier on top, for ``model.classifier_init = auto``),
    ``group_matcher(coarse=False)`` (timm's: its layers in order, for ``optim.layer_decay``) and
    ``removed_classifier`` (names of a classifier taken off, whose keys a weights file may
    carry). ``model.backbone`` also takes ``timm:NAME``, ``torchvision:NAME`` and
    ``clip:NAME`` without a registration (:mod:`ltcore.backbones`).
    """


@hookspec
def register_heads(register: Register[HeadFactory]) -> None:
    """Register heads put on top of a backbone (classifiers, projection MLPs).

    ``register(name, factory, doc="")``; ``factory(in_dim: int, out_dim: int, **options) ->
    torch.nn.Module``.
    """


@hookspec
def register_views(register: Register[ViewPipeline]) -> None:
    """Register view pipelines (augmentations): ``register(name, pipeline, doc="")``.

    ``pipeline`` is a :class:`ltcore.protocols.ViewPipeline` (for example an
    :class:`ltcore.ViewPipeline`): a per-image reference transform and, where supported, a
    batched implementation with per-sample randomness.
    """


@hookspec
def register_samplers(register: Register[SamplerFactory]) -> None:
    """Register training samplers: ``register(name, factory, doc="")``.

    ``factory(run: Run, **options) -> Sampler`` (see :class:`ltcore.protocols.Sampler`).
    """


@hookspec
def register_losses(register: Register[LossFactory]) -> None:
    """Register loss terms: ``register(name, factory, doc="")``.

    ``factory(run: Run, **options) -> LossTerm``, so other plugins can reuse a loss by name.
    """


@hookspec
def register_memory_banks(register: Register[MemoryBankFactory]) -> None:
    """Register memory banks (queues, EMA centroids): ``register(name, factory, doc="")``.

    ``factory(run: Run, **options) -> MemoryBank``; attach the result with ``run.add_module``
    so it is moved to the device and checkpointed.
    """


@hookspec
def register_prototype_providers(register: Register[PrototypeProviderFactory]) -> None:
    """Register prototype providers (class centres used as extra contrast entries).

    ``register(name, factory, doc="")``; ``factory(run: Run, **options) -> PrototypeProvider``.
    """


@hookspec
def register_rebalancers(register: Register[RebalancerFactory]) -> None:
    """Register rebalancers: objects that act on classifier logits or weights.

    ``register(name, factory, doc="")``; ``factory(run: Run, **options) -> Rebalancer``. A
    rebalancer is a run plugin object (:class:`~ltcore.protocols.Rebalancer`): add it with
    ``run.register(rebalancer, name)`` and its ``adjust_classifier_logits`` /
    ``adjust_eval_logits`` methods take part in training and in every evaluation.
    """


@hookspec
def register_tasks(register: Register[Task]) -> None:
    """Register tasks, what runs predict: ``register(name, task, doc="")`` (since ltcore 1.4).

    ``task`` is an instance of a subclass of :class:`ltcore.Task` (image classification, the
    core's ``classification``) overriding what its task changes: the training batches, the
    forward of the stacked views, the evaluation, the stage report, the epoch line and the
    plan's lines. A dataset names its task (``Dataset.task``); a run of a task a plugin
    registered needs that plugin selected (:mod:`ltcore.tasks`).
    """


@hookspec
def register_metrics(register: Register[Metric]) -> None:
    """Register evaluation metrics: ``register(name, metric, doc="")``.

    ``metric`` is a :class:`~ltcore.protocols.Metric`: a function of one split's evaluation
    outputs (logits, labels, features, class counts) returning named floats, computed every
    epoch or only at the end of a stage.
    """


@hookspec
def register_stages(register: Register[StageFactory]) -> None:
    """Register stages other plugins can add to a run: ``register(name, factory, doc="")``.

    ``factory(run: Run, **options) -> Stage``; add the result with ``run.add_stage``.
    """


@hookspec
def register_optimizers(register: Register[OptimizerFactory]) -> None:
    """Register optimisers selectable with ``optim.name``: ``register(name, factory, doc="")``.

    ``factory(param_groups: list[dict], optim: OptimConfig) -> torch.optim.Optimizer``. The
    learning rate of each group is set by the engine every epoch (``lr_scale`` in a group
    multiplies it).
    """


@hookspec
def register_reference_results(register: RegisterReference) -> None:
    """Declare published results that runs of this plugin reproduce (``--reference papers``).

    ``register(plugins="bcl,rcl", dataset="cifar10-lt", imbalance_factor=100,
    metrics={"test/acc": 86.2}, source="RCL, Table 2")``: a comparison row of runs with these
    plugins, dataset and factor shows the numbers beside its own. ``match={"model.backbone":
    "clip:RN50", ...}`` (since ltcore 1.2) names further settings the runs must share.
    """


@hookspec
def register_tables(register: RegisterTable) -> None:
    """Declare the paper's tables and figures as runnable sweeps: ``register(PaperTable(...))``
    (since ltcore 1.3).

    Each is ``ltrun reproduce <plugin>:<name>``: its cells' runs, the paper's number of each
    cell and, for a table that cannot run yet, what it ``waits`` for (``docs/reproduce.md``).
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``ltrun`` click group ``cli``."""


@hookspec
def register_options(register: RegisterOptions) -> None:
    """Declare this plugin's options: ``register(options_class)``.

    ``options_class`` is an attrs class whose fields (with validators and ``metadata={"doc": ...}``,
    see :func:`ltcore.doc`) become the ``<plugin>.<field>`` configuration keys; ``ltrun plugins
    --options NAME`` shows them.
    """


@hookspec
def register_presets(register: RegisterPreset) -> None:
    """Declare recipes: ``register(name, settings, doc="")``.

    ``settings`` maps configuration keys (``"epochs"``, ``"optim.lr"``, ``"bcl.temperature"``) to
    values. ``--preset NAME`` applies the preset of that name of every selected plugin; a preset
    named ``default`` is applied whenever the plugin is selected.
    """


# -- run assembly ---------------------------------------------------------------------------


@hookspec
def setup_run(run: Run) -> None:
    """Add this plugin's method to ``run``.

    Called for the selected plugins only, in ``--plugin`` order, after the dataset and the main
    model are built and before any optimiser exists: add stages, views, heads, loss terms,
    modules and run plugin objects. Do not depend on what another plugin adds here; act on it
    in :func:`compose_run`.
    """


@hookspec
def compose_run(run: Run) -> None:
    """Act on what the other selected plugins set up (their stages, views and loss terms).

    Called after every selected plugin's :func:`setup_run`, in ``--plugin`` order, so a plugin
    listed later sees what an earlier one composed.
    """


# -- run time -------------------------------------------------------------------------------


@hookspec
def adjust_images(step: Step) -> None:
    """Add or replace entries of ``step.images`` (role -> ``[B, C, H, W]``) before the forward.

    Views declared with ``pipeline=None`` are produced here (ICCL's interpolated images).
    """


@hookspec
def adjust_embeddings(step: Step) -> None:
    """Replace entries of ``step.embeddings`` (role -> ``[B, D]``) before the losses see them."""


@hookspec
def adjust_classifier_logits(step: Step) -> None:
    """Replace entries of ``step.logits`` (role -> ``[B, C]``) before the losses see them.

    The training-time counterpart of :func:`adjust_eval_logits`; a rebalancer that changes the
    classifier's output (LWS's per-class scales) implements both.
    """


@hookspec
def adjust_eval_logits(evaluation: Evaluation) -> None:
    """Replace the logits of an evaluation before any metric is computed.

    ``evaluation.outputs`` maps split names to :class:`~ltcore.EvalOutputs` with the raw
    classifier logits and the backbone features of the evaluated model
    (``evaluation.model``); assign ``outputs.logits``. Every evaluation goes through this hook:
    per-epoch figures, the final figures and reports, RCL's per-class measurement,
    shifted-test sets and ``ltrun evaluate``. ``evaluation.stage`` is the stage being trained
    (None for a saved model) and ``evaluation.final`` marks its last epoch. Post-hoc logit
    adjustment (``eval.posthoc_la_tau``) is applied after every implementation. An
    implementation that also offers ``saved_logit_adjustment(model)`` (None, or a per-class
    ``(scale, bias)``) lets the saved model be used on its own (``ltcore.load_model``, ``ltrun
    predict``, ``ltrun export``); without it the saved model is used through ``ltrun
    evaluate`` only.
    """


@hookspec
def contrastive_logit_bias(contrast: ContrastSet) -> torch.Tensor | None:
    """Return a bias added to a contrastive loss's logits, or None.

    ``contrast`` describes the loss term being computed (``contrast.term``, a
    :class:`~ltcore.LossTerm`), its anchors and its contrast columns (labels, and which are
    prototypes). The returned tensor broadcasts to ``[anchors, columns]``; the biases of all
    implementations are summed.
    """


@hookspec
def adjust_parameter_groups(run: Run, stage: Stage, groups: list[dict[str, Any]]) -> None:
    """Change, in place, the parameter groups the optimiser of ``stage`` will hold.

    ``groups`` starts as what ``stage.trainable`` gives (every trainable parameter of the stage
    model, or the classifier's for ``"classifier"``). Groups are dicts for
    ``torch.optim`` (``params`` plus options such as ``weight_decay``; ``lr_scale`` multiplies
    the scheduled learning rate). Every parameter in the groups trains in this stage; every
    other parameter of the stage model is frozen for it.
    """


# -- lifecycle ------------------------------------------------------------------------------


@hookspec
def run_start(run: Run) -> None:
    """The run is assembled and about to train (also when a run is resumed)."""


@hookspec
def run_end(run: Run) -> None:
    """Every stage has finished."""


@hookspec
def run_failed(run: Run, error: BaseException) -> None:
    """Training stopped with ``error`` (an interrupt, a non-finite loss, any exception).

    Called before the run is marked FAILED or KILLED; the last checkpoint is kept.
    """


@hookspec
def stage_start(run: Run, stage: Stage) -> None:
    """``stage`` is about to train its first (or resumed) epoch."""


@hookspec
def stage_end(run: Run, stage: Stage) -> None:
    """``stage`` finished its last epoch and its final evaluation."""


@hookspec
def epoch_start(run: Run, stage: Stage, epoch: int) -> None:
    """An epoch (0-based, within ``stage``) begins."""


@hookspec
def epoch_end(run: Run, stage: Stage, epoch: int, metrics: dict[str, float]) -> None:
    """An epoch ended; ``metrics`` (name -> float) holds its training and evaluation figures.

    Plugins may add entries to ``metrics`` before they are logged.
    """


@hookspec
def step_end(step: Step) -> None:
    """One optimisation step finished (after ``optimizer.step()``)."""
