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

Run assembly (``setup_run``)
    Called only for the plugins selected with ``--plugin``: each adds its stages, views, heads,
    loss terms and stateful modules to the :class:`ltcore.run.Run`. Order plugins that depend on
    what others added with ``trylast=True`` (RCL rebalances whatever contrastive loss the others
    set up).

Run-time hooks
    Called every step for the selected plugins, so one plugin can adjust what another produced:
    the embeddings, the classifier logits, and the logits of any contrastive loss.

Lifecycle hooks
    ``run_start``/``run_end``, ``stage_start``/``stage_end``, ``epoch_start``/``epoch_end`` and
    ``step_end`` for EMA updates, memory-bank writes, schedule switches and the like.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ltcore")


# -- registration ---------------------------------------------------------------------------


@hookspec
def register_datasets(register):
    """Register datasets: ``register(name, factory, doc="")``.

    ``factory(config: RunConfig) -> ltcore.data.Dataset`` builds the long-tailed training split
    and the balanced validation/test splits.
    """


@hookspec
def register_backbones(register):
    """Register feature extractors: ``register(name, factory, doc="")``.

    ``factory(in_channels: int) -> nn.Module`` with an integer attribute ``feature_dim``.
    """


@hookspec
def register_heads(register):
    """Register heads put on top of a backbone (classifiers, projection MLPs).

    ``register(name, factory, doc="")``; ``factory(in_dim: int, out_dim: int, **options) -> nn.Module``.
    """


@hookspec
def register_views(register):
    """Register view pipelines (augmentations): ``register(name, pipeline, doc="")``.

    ``pipeline`` is an :class:`ltcore.views.ViewPipeline`: a per-image reference transform and,
    where supported, a batched implementation with per-sample randomness.
    """


@hookspec
def register_samplers(register):
    """Register training samplers: ``register(name, factory, doc="")``.

    ``factory(run, **options)`` returns an object with ``epoch_indices(epoch, generator)``.
    """


@hookspec
def register_losses(register):
    """Register loss terms: ``register(name, factory, doc="")``.

    ``factory(run, **options) -> ltcore.run.LossTerm``, so other plugins can reuse a loss by name.
    """


@hookspec
def register_memory_banks(register):
    """Register memory banks (queues, EMA centroids): ``register(name, factory, doc="")``.

    ``factory(run, **options) -> nn.Module``; attach the result with ``run.add_module`` so it is
    checkpointed.
    """


@hookspec
def register_prototype_providers(register):
    """Register prototype providers (class centres used as extra contrast entries).

    ``register(name, factory, doc="")``; ``factory(run, **options)`` returns an object whose
    ``prototypes(step) -> Tensor[C, D]`` gives L2-normalised class prototypes.
    """


@hookspec
def register_rebalancers(register):
    """Register rebalancers (re-weighting schedules, post-hoc or retraining fixes).

    ``register(name, factory, doc="")``; ``factory(run, **options)`` applies itself to the run
    (adds a stage, a loss weight schedule, an evaluation transform).
    """


@hookspec
def register_metrics(register):
    """Register evaluation metrics: ``register(name, metric, doc="")``.

    ``metric`` is an :class:`ltcore.evaluation.Metric`: a function of the evaluation outputs
    (logits, labels, embeddings, class counts) returning named floats, computed every epoch or
    only at the end of a stage.
    """


@hookspec
def register_stages(register):
    """Register stages other plugins can add to a run: ``register(name, factory, doc="")``.

    ``factory(run, **options) -> ltcore.run.Stage``.
    """


@hookspec
def register_commands(cli):
    """Add subcommands to the ``ltrun`` click group ``cli``."""


@hookspec
def register_options(register):
    """Declare this plugin's options: ``register(options_class)``.

    ``options_class`` is an attrs class whose fields (with validators and ``metadata={"doc": ...}``)
    become the ``<plugin>.<field>`` configuration keys; ``ltrun plugins --options NAME`` shows them.
    """


@hookspec
def register_presets(register):
    """Declare recipes: ``register(name, settings, doc="")``.

    ``settings`` maps configuration keys (``"epochs"``, ``"optim.lr"``, ``"bcl.temperature"``) to
    values. ``--preset NAME`` applies the preset of that name of every selected plugin.
    """


# -- run assembly ---------------------------------------------------------------------------


@hookspec
def setup_run(run):
    """Add this plugin's pieces to ``run`` (an :class:`ltcore.run.Run`).

    Called for the plugins selected with ``--plugin`` only, after the dataset and model are built
    and before any optimiser exists: add stages, views, heads, loss terms, modules.
    """


# -- run time -------------------------------------------------------------------------------


@hookspec
def adjust_images(step):
    """Add or replace entries of ``step.images`` (role -> [B, C, H, W]) before the forward.

    Views declared with ``pipeline=None`` are produced here (ICCL's interpolated images).
    """


@hookspec
def adjust_embeddings(step):
    """Replace entries of ``step.embeddings`` (role -> [B, D]) before the losses see them."""


@hookspec
def adjust_classifier_logits(step):
    """Replace entries of ``step.logits`` (role -> [B, C]) before the losses see them."""


@hookspec
def contrastive_logit_bias(contrast):
    """Return a bias added to a contrastive loss's logits, or None.

    ``contrast`` is an :class:`ltcore.run.ContrastSet` describing the active loss's anchors and
    contrast columns (their labels and kinds). The returned tensor broadcasts to
    ``[anchors, columns]``; the biases of all plugins are summed.
    """


# -- lifecycle ------------------------------------------------------------------------------


@hookspec
def run_start(run):
    """The run is assembled and about to train (also called when a run is resumed)."""


@hookspec
def run_end(run):
    """All stages have finished."""


@hookspec
def stage_start(run, stage):
    """``stage`` is about to train its first (or resumed) epoch."""


@hookspec
def stage_end(run, stage):
    """``stage`` finished its last epoch."""


@hookspec
def epoch_start(run, stage, epoch):
    """An epoch (0-based, within ``stage``) begins."""


@hookspec
def epoch_end(run, stage, epoch, metrics):
    """An epoch ended; ``metrics`` (name -> float) holds its training and evaluation figures.

    Plugins may add entries to ``metrics`` before they are logged.
    """


@hookspec
def step_end(step):
    """One optimisation step finished (after ``optimizer.step()``)."""
