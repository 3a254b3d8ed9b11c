"""ProCo's run components: coreset prototypes refreshed every epoch, and the prototype loss term.

:class:`CoresetPrototypes` (registered as the ``coreset`` prototype provider) keeps a per-class
coreset of a stage's training images. At the start of every epoch (:meth:`refresh`) it

1. re-selects the coreset when due (epoch 0, then every ``reselect_every`` epochs), by per-class
   k-center greedy (or uniformly at random) on the current model's embeddings of the un-augmented
   training images;
2. embeds two augmented views of the coreset with the current model (eval mode, no gradient,
   the stage's contrastive view pipeline applied per sample) and averages them per class into two
   L2-normalised prototype sets ``C_1`` and ``C_2``.

:class:`ProCoTerm` is the symmetric prototype loss of the stage's embedding views against both
sets. Each provider is a run plugin object: its ``epoch_start`` refreshes it, and the coreset
indices are its state, so a resumed run keeps the same coreset.
"""

from __future__ import annotations


import torch
from torch import Tensor

from ltcore import (LossTerm, PluginError, Step, hookimpl, load_image, seed_image_randomness,
                    worker_options)

from .components import SECOND_VIEW_EMBEDDINGS
from .coreset import select_coreset
from .loss import adaptive_temperatures, class_prototypes, prototype_loss

SELECTIONS = ("k-center-greedy", "random")
SELECTION_FEATURES = ("projection", "backbone")


def coreset_budgets(class_counts: Tensor, fraction: float | None = None,
                    per_class: int | None = None) -> Tensor:
    """Images kept per class: ``clamp(ceil(f n_c), 1, n_c)`` for a ``fraction`` f, or
    ``min(b, n_c)`` for a ``per_class`` budget b (the rules of ``select_coreset``)."""
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction and per_class")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        return torch.minimum(torch.ceil(class_counts * fraction).long().clamp_min(1), class_counts)
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    return class_counts.clamp_max(per_class)


def random_coreset(labels: Tensor, budgets: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Sorted indices of a uniformly random subset of ``budgets[c]`` images of each class c."""
    scores = torch.rand(labels.shape, generator=generator, device=labels.device)
    order = torch.argsort(scores)
    grouped = order[torch.argsort(labels[order], stable=True)]
    counts = torch.bincount(labels, minlength=budgets.numel())
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(labels.numel(), device=labels.device) - starts[labels[grouped]]
    return grouped[rank < budgets[labels[grouped]]].sort().values


class _CoresetImages(torch.utils.data.Dataset):
    """Per-image reference views of coreset images (file datasets, or pipelines without a batched
    form); each image's randomness is seeded by (seed, position)."""

    def __init__(self, split, indices: list[int], transform, seed: int):
        self.split, self.indices, self.transform, self.seed = split, indices, transform, seed

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, position):
        index = self.indices[position]
        if self.split.images is not None:
            from PIL import Image

            array = self.split.images[index].permute(1, 2, 0).numpy()
            image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        else:
            image = load_image(self.split.paths[index])
        seed_image_randomness((self.seed * 1_000_003 + position) % (2 ** 63))
        return self.transform(image)


class CoresetPrototypes:
    """Prototype provider: class means of two augmented views of a per-class coreset.

    ``prototypes(step)`` gives the first set ``[C, D]``; :attr:`sets` both, and
    :attr:`class_mask` the classes with a coreset image. Registered as a run plugin object (see
    :func:`coreset_prototypes`), its ``epoch_start`` calls :meth:`refresh` at every epoch start
    of ``stage``. Exactly one of ``fraction`` / ``per_class`` sizes the coreset (``per_class``
    wins when given).
    """

    def __init__(self, run, stage=None, *, fraction: float = 0.1, per_class: int | None = None,
                 selection: str = "k-center-greedy", reselect_every: int = 10,
                 features: str = "projection", view: str | None = None):
        if selection not in SELECTIONS:
            raise ValueError(f"unknown coreset selection {selection!r}; expected one of {SELECTIONS}")
        if features not in SELECTION_FEATURES:
            raise ValueError(f"unknown selection features {features!r}; expected {SELECTION_FEATURES}")
        if reselect_every < 0:
            raise ValueError(f"reselect_every must be >= 0, got {reselect_every}")
        self.run = run
        self.stage = stage or run.main_stage
        self.selection = selection
        self.reselect_every = reselect_every
        self.features = features
        self.view = view or run.config.views.contrastive
        run.component("view", self.view)
        run.projection_head(self.stage.model)
        counts = run.dataset.class_counts
        self.budgets = (coreset_budgets(counts, per_class=per_class) if per_class
                        else coreset_budgets(counts, fraction=fraction))
        self.fraction, self.per_class = (None, per_class) if per_class else (fraction, None)
        self.sets: tuple[Tensor, Tensor] | None = None
        self.class_mask: Tensor | None = None
        self.coreset: Tensor | None = None
        """Training indices of the current coreset (CPU), or None before the first selection."""

    @hookimpl
    def epoch_start(self, run, stage, epoch):
        if stage is self.stage:
            self.refresh(epoch)

    def state_dict(self) -> dict:
        """The coreset, and the prototype sets of the epoch in progress (an epoch stopped at a
        step continues with the prototypes it started with)."""
        return {"coreset": self.coreset, "sets": self.sets, "class_mask": self.class_mask}

    def load_state_dict(self, state: dict) -> None:
        device = self.run.device
        self.coreset = state["coreset"]
        if state.get("sets") is not None:
            self.sets = tuple(s.to(device) for s in state["sets"])
            self.class_mask = state["class_mask"].to(device)

    # -- the coreset --

    def due(self, epoch: int) -> bool:
        """Whether the coreset is (re-)selected at the start of ``epoch``."""
        if self.coreset is None or epoch == 0:
            return True
        return self.reselect_every > 0 and epoch % self.reselect_every == 0

    @torch.no_grad()
    def select(self, seed: int) -> Tensor:
        """Select a new coreset with the current model (it becomes :attr:`coreset`)."""
        run = self.run
        labels = run.dataset.train.labels.to(run.device)
        if self.selection == "random":
            generator = torch.Generator(device=run.device).manual_seed(seed)
            chosen = random_coreset(labels, self.budgets.to(run.device), generator)
        else:
            chosen = select_coreset(self.embed_training_set(), labels,
                                    per_class_fraction=self.fraction,
                                    per_class_budget=self.per_class,
                                    num_classes=run.dataset.num_classes)
        self.coreset = chosen.cpu()
        return self.coreset

    @torch.no_grad()
    def embed_training_set(self) -> Tensor:
        """Embeddings of the un-augmented training images (eval mode), on the run's device."""
        run, model = self.run, self.stage.model
        features = run.evaluate(model, ["train"], features=True).outputs["train"].features
        if self.features == "backbone":
            return features.to(run.device)
        was_training = model.training
        model.eval()
        try:
            size = run.config.eval.batch_size
            with run.autocast():
                out = [run.embed(model, chunk.to(run.device)).float()
                       for chunk in features.split(size)]
            return torch.cat(out)
        finally:
            model.train(was_training)

    # -- the prototypes --

    @torch.no_grad()
    def embed_views(self, indices: Tensor, seed: int) -> list[Tensor]:
        """Two augmented views of the training images ``indices``, embedded by the stage model in
        eval mode: two ``[n, D]`` tensors."""
        run, model = self.run, self.stage.model
        ds = run.dataset
        pipeline = run.component("view", self.view)
        size = run.config.eval.batch_size
        was_training = model.training
        model.eval()
        views = []
        try:
            with run.autocast():
                if ds.in_memory and pipeline.batched:
                    transform = pipeline.make_batched(ds.image_size, ds.mean, ds.std)
                    generator = torch.Generator(device=run.device).manual_seed(seed)
                    images = ds.train.images[indices]
                    for _ in range(2):
                        batches = (transform(chunk.to(run.device), generator)
                                   for chunk in images.split(size))
                        views.append(torch.cat([self._embed(model, x) for x in batches]))
                else:
                    transform = pipeline.make_reference(ds.image_size, ds.mean, ds.std)
                    for view in range(2):
                        dataset = _CoresetImages(ds.train, indices.tolist(), transform,
                                                 seed * 2 + view)
                        loader = torch.utils.data.DataLoader(
                            dataset, batch_size=size, num_workers=run.config.views.loader_workers,
                            **worker_options())
                        views.append(torch.cat([self._embed(model, x.to(run.device))
                                                for x in loader]))
        finally:
            model.train(was_training)
        return views

    def _embed(self, model, images: Tensor) -> Tensor:
        return self.run.embed(model, model.backbone(images)).float()

    def refresh(self, epoch: int) -> None:
        """Epoch start: re-select the coreset when due, then recompute both prototype sets."""
        run = self.run
        seed = run.epoch_seed(self.stage, epoch) ^ 0x50726F436F
        if self.due(epoch):
            self.select(seed)
        indices = self.coreset
        labels = run.dataset.train.labels[indices].to(run.device)
        num_classes = run.dataset.num_classes
        first, second = self.embed_views(indices, seed)
        self.sets = (class_prototypes(first, labels, num_classes),
                     class_prototypes(second, labels, num_classes))
        self.class_mask = torch.bincount(labels, minlength=num_classes) > 0

    def prototypes(self, step: Step | None = None) -> Tensor:
        """The first prototype set ``[C, D]`` (L2-normalised; zero rows for absent classes)."""
        return self._current()[0]

    def _current(self) -> tuple[Tensor, Tensor]:
        if self.sets is None:
            raise PluginError(f"the coreset prototypes of stage {self.stage.name!r} were never "
                              "computed: refresh(epoch) runs at every epoch start of the stage")
        return self.sets


def coreset_prototypes(run, stage=None, **options) -> CoresetPrototypes:
    """A :class:`CoresetPrototypes` of ``stage`` (default: the main stage), registered as the run
    plugin object ``proco/<stage>`` so that it refreshes at every epoch start and its coreset is
    checkpointed."""
    provider = CoresetPrototypes(run, stage, **options)
    run.register(provider, f"proco/{provider.stage.name}")
    return provider


class ProCoTerm:
    """ProCo's symmetric prototype loss on the stage's embedding views (a loss-term function).

    The views ``v_{i,1}, v_{i,2}`` are the stage's first two embedding views. With a single
    embedding view, the second is ``step.extras["second_view_embeddings"]`` when a plugin
    published one (CoGloAT's key view, from the momentum encoder, without gradient), else the
    single view is used alone. Per view ``v`` the loss averages
    ``-log e^{v.c_{y,q}/tau} / (e^{v.c_{y,q}/tau} + sum_{c in C_q^-} e^{v.c/tau})`` over the
    anchors and both sets ``q``; the views are averaged, so two views give the paper's
    ``1/(4N)`` sum exactly.
    """

    def __init__(self, provider: CoresetPrototypes, temperature: float = 0.1,
                 adaptive: bool = False, gamma: float = 0.1):
        self.provider = provider
        self.temperature = temperature
        run = provider.run
        self.temperatures = (adaptive_temperatures(run.class_counts.float(), gamma).to(run.device)
                             if adaptive else None)

    def views(self, step: Step) -> list[tuple[Tensor, Tensor]]:
        """(embeddings ``[B, D]``, labels ``[B]``) of each view the loss uses."""
        roles = step.embedding_roles()
        if not roles:
            raise PluginError(f"stage {step.stage.name!r} has no embedding view for ProCo")
        views = [(step.embeddings[r], step.targets(r)) for r in roles[:2]]
        second = step.extras.get(SECOND_VIEW_EMBEDDINGS)
        if len(views) == 1 and second is not None:
            views.append((second, views[0][1]))
        return views

    def __call__(self, step: Step) -> Tensor:
        first, second = self.provider._current()
        mask = self.provider.class_mask
        losses = []
        for embeddings, labels in self.views(step):
            tau = self.temperature if self.temperatures is None else self.temperatures[labels]
            losses.append(prototype_loss(torch.stack([embeddings, embeddings]), labels, first,
                                         second, tau, class_mask=mask))
        return torch.stack(losses).mean()


def proco_term(run, provider: CoresetPrototypes, *, temperature: float = 0.1,
               adaptive: bool = False, gamma: float = 0.1, weight: float = 1.0,
               plugin: str = "proco", name: str = "proco") -> LossTerm:
    """The ProCo loss term of ``provider``'s stage."""
    return LossTerm(name, ProCoTerm(provider, temperature, adaptive, gamma), plugin, weight,
                    kind="contrastive")
