"""What the core requires of each component kind a plugin registers.

These are structural types (:class:`typing.Protocol`): a component needs no base class, only
the attributes below. :class:`ltcore.ViewPipeline` and :class:`ltcore.Metric` are ready-made
implementations of the view-pipeline and metric protocols; the core's samplers derive from
:class:`ltcore.ClassPowerSampler` and friends. The factory aliases at the end type the
``register(name, factory, doc="")`` calls of the registration hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .config import OptimConfig, RunConfig
    from .data import Dataset
    from .evaluation import EvalOutputs, Evaluation
    from .run import LossTerm, Stage, Step
    from .tables import PaperTable


@runtime_checkable
class Sampler(Protocol):
    """Draws one epoch's training indices.

    ``epoch_indices`` returns ``LongTensor [N]`` (one index per row) or ``[N, K]`` (one column
    per *source*: ICCL's paired sampler gives ``sample`` and ``paired``); ``sources`` names the
    columns and defaults to ``("sample",)`` when absent. Every epoch has the same number of rows.
    """

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor: ...


@runtime_checkable
class MemoryBank(Protocol):
    """State kept across steps (a queue, EMA centroids, a momentum encoder).

    A ``torch.nn.Module`` whose buffers and parameters hold the bank: attached with
    ``run.add_module`` it moves to the run's device and is saved in every checkpoint. How it is
    written (``enqueue``, ``update``) is the bank's own API.
    """

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> Any: ...


@runtime_checkable
class PrototypeProvider(Protocol):
    """Class prototypes used as extra contrast entries (BCL's classifier MLP, ICCL's centroids,
    ProCo's coreset means)."""

    def prototypes(self, step: Step | None = None) -> Tensor:
        """``[C, D]`` L2-normalised class prototypes for this step."""
        ...


@runtime_checkable
class Rebalancer(Protocol):
    """A run plugin object that changes classifier logits or weights (post-hoc or trained).

    Registered with ``run.register(rebalancer, name)``, it implements ``adjust_eval_logits``
    (every evaluation) and, when it acts during training too, ``adjust_classifier_logits``. State
    it learns or chooses that is not in a module goes through ``state_dict()`` /
    ``load_state_dict(state)`` (plain values and tensors): saved with the run and with the final
    model, so ``ltrun evaluate`` applies it again. ``saved_logit_adjustment(model)`` says what
    its ``adjust_eval_logits`` does to a saved model's logits, None or a per-class
    ``(scale, bias)``, so that the model can be used without the run (``ltcore.load_model``);
    without it, the saved model is usable through ``ltrun evaluate`` only.
    """

    def adjust_eval_logits(self, evaluation: Evaluation) -> None: ...


@runtime_checkable
class ViewPipeline(Protocol):
    """A named augmentation in two forms: per image (reference) and per batch (batched).

    ``make_reference`` returns ``PIL.Image -> Tensor [C, S, S]``; ``make_batched`` (when
    ``batched``) returns ``(uint8 [B, C, H, W], torch.Generator) -> Tensor [B, C, S, S]`` with
    per-sample randomness drawn from the generator.
    """

    name: str
    description: str
    batched: bool

    def make_reference(self, image_size: int, mean: Sequence[float], std: Sequence[float],
                       **options: Any) -> Callable: ...

    def make_batched(self, image_size: int, mean: Sequence[float], std: Sequence[float],
                     **options: Any) -> Callable: ...


@runtime_checkable
class Metric(Protocol):
    """Named figures of one split's evaluation outputs.

    ``when`` is ``"epoch"`` (every evaluation) or ``"final"`` (the end of each stage, for costly
    figures); ``needs_features`` asks for the backbone features on the CPU.
    """

    when: str
    needs_features: bool

    def __call__(self, outputs: EvalOutputs) -> dict[str, float]: ...


T = TypeVar("T", contravariant=True)


class Register(Protocol[T]):
    """The ``register`` callable of a component registration hook."""

    def __call__(self, name: str, component: T, doc: str = "") -> None: ...


class RegisterOptions(Protocol):
    """``register(options_class)`` of ``register_options``."""

    def __call__(self, options_class: type) -> None: ...


class RegisterPreset(Protocol):
    """``register(name, settings, doc="")`` of ``register_presets``."""

    def __call__(self, name: str, settings: dict[str, Any], doc: str = "") -> None: ...


class RegisterReference(Protocol):
    """``register(plugins=..., dataset=..., imbalance_factor=..., metrics=..., source=...,
    match=None)`` of ``register_reference_results``; ``match`` holds further keys a run must
    share for the row to apply (run parameters such as ``{"model.backbone": "clip:RN50"}``)."""

    def __call__(self, *, plugins: str, dataset: str, imbalance_factor: float | str,
                 metrics: dict[str, float], source: str,
                 match: dict[str, Any] | None = None) -> None: ...


class RegisterTable(Protocol):
    """``register(table)`` of ``register_tables``: a :class:`~ltcore.tables.PaperTable`."""

    def __call__(self, table: "PaperTable") -> None: ...


DatasetFactory = Callable[["RunConfig"], "Dataset"]
BackboneFactory = Callable[[int], "torch.nn.Module"]
HeadFactory = Callable[..., "torch.nn.Module"]
SamplerFactory = Callable[..., Sampler]
LossFactory = Callable[..., "LossTerm"]
MemoryBankFactory = Callable[..., MemoryBank]
PrototypeProviderFactory = Callable[..., PrototypeProvider]
RebalancerFactory = Callable[..., Rebalancer]
StageFactory = Callable[..., "Stage"]
OptimizerFactory = Callable[[list, "OptimConfig"], "torch.optim.Optimizer"]
"""Factories take the run first (``factory(run, **options)``) except where the hook says."""
