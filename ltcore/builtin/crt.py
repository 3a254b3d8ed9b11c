"""``crt``: classifier re-training (Kang et al. 2020), a second stage any run can add.

After the main stage, a stage named ``classifier`` re-initialises the classifier (at its start,
seeded by the run seed) and re-trains it with cross-entropy and class-balanced sampling on the
frozen encoder (``trainable="classifier"``: backbone in eval mode, no gradient), with a cosine
learning rate from ``crt.lr`` over ``crt.epochs`` epochs. Works after any method's main stage:
``--plugin ce --plugin crt``, ``--plugin kcl --plugin crt``, ``--plugin bcl --plugin crt``.
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl

PLUGIN = "crt"
STAGE = "classifier"


@attrs.define(kw_only=True)
class Options:
    """Options of ``crt``: the re-training stage."""

    epochs: int = doc("epochs of the stage (Kang et al.: 10)", default=10,
                      validator=attrs.validators.ge(1))
    lr: float = doc("peak learning rate of the stage, cosine-annealed to 0 (Kang et al.: 0.2 "
                    "at batch 512)", default=0.2, validator=attrs.validators.gt(0))
    sampler: str = doc("registered sampler of the stage", default="class-balanced")
    view: str = doc("view pipeline of the stage ('' = the run's views.classifier)", default="")


def retraining_stage(run, name: str = STAGE, plugin: str = PLUGIN, epochs: int = 10,
                     lr: float = 0.2, sampler: str = "class-balanced", view: str = ""):
    """A stage that trains only the classifier of the run's model on the frozen encoder
    (options name, plugin, epochs, lr, sampler, view); cosine lr, no warm-up"""
    from ltcore import CLASSIFIER_ROLE, ScheduleConfig

    stage = run.new_stage(name, epochs, plugin=plugin, trainable="classifier")
    stage.sampler = sampler
    stage.optim.lr = lr
    stage.schedule = ScheduleConfig(kind="cosine", warmup_epochs=0)
    if sampler == "progressively-balanced":
        stage.sampler_options = {"total_epochs": epochs}
    stage.add_view(CLASSIFIER_ROLE, view or run.config.views.classifier, classify=True)
    return stage


def reinitialise(module, seed: int) -> None:
    """Reset ``module``'s parameters to a fresh default initialisation drawn from ``seed``.

    Sub-modules with ``reset_parameters`` use it; parameters of other sub-modules with two or
    more dimensions get ``nn.Linear``'s default (Kaiming uniform, ``a = sqrt(5)``). The draw
    happens on the CPU with a private seed, so it is the same on every device and leaves the
    run's random streams untouched.
    """
    import copy
    import math

    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = copy.deepcopy(module).cpu()
        for sub in fresh.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            for param in sub.parameters(recurse=False):
                if param.dim() >= 2:
                    with torch.no_grad():
                        nn.init.kaiming_uniform_(param, a=math.sqrt(5))
    module.load_state_dict(fresh.state_dict())


def imagenet_recipe() -> dict:
    """Kang et al.'s ImageNet-LT joint-training recipe (ResNeXt-50, 90 epochs, batch 512)."""
    return {"dataset": "imagenet-lt", "model.backbone": "resnext50",
            "views.classifier": "imagenet-standard", "epochs": 90, "batch_size": 512,
            "optim.lr": 0.2, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
            "schedule.kind": "cosine", "schedule.warmup_epochs": 0}


def register_retraining_presets(register, plugin: str, extra: dict | None = None) -> None:
    """CIFAR-LT (LDAM-DRW reference schedule for the main stage) and ImageNet-LT (Kang et al.)
    presets of a classifier-rebalancing plugin."""
    from ltcore.builtin.ldam_drw import register_cifar_recipes

    extra = extra or {}
    register_cifar_recipes(register, extra, f" for the main stage, then {plugin}")
    register("imagenet-lt", {**imagenet_recipe(), **extra},
             f"Kang et al.: ImageNet-LT, ResNeXt-50, 90 epochs, batch 512, lr 0.2 cosine, "
             f"then {plugin}")


def reinitialisation_seed(run) -> int:
    """The seed of the classifier re-initialisation, derived from the run seed."""
    return (run.config.seed * 1_000_003 + 0xC1A55) % (2 ** 63)


class Retraining:
    """crt's plugin object in a run: re-initialises the classifier when its stage first starts
    (a resumed stage keeps what it trained)."""

    def __init__(self, stage, seed: int):
        self.stage = stage
        self.seed = seed
        self.reinitialised = False

    @hookimpl
    def stage_start(self, run, stage):
        if stage is self.stage and not self.reinitialised:
            reinitialise(stage.model.classifier, self.seed)
            self.reinitialised = True

    def state_dict(self) -> dict:
        return {"reinitialised": self.reinitialised}

    def load_state_dict(self, state: dict) -> None:
        self.reinitialised = state["reinitialised"]


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_stages(register):
    register("classifier-retraining", retraining_stage)


@hookimpl
def register_presets(register):
    register_retraining_presets(register, PLUGIN, {"crt.epochs": 10, "crt.lr": 0.2})


@hookimpl
def setup_run(run):
    from ltcore import cross_entropy_term

    options = run.option(PLUGIN)
    stage = run.build("stage", "classifier-retraining", epochs=options.epochs, lr=options.lr,
                      sampler=options.sampler, view=options.view)
    stage.epochs_setting = f"{PLUGIN}.epochs"
    stage.set_classifier_loss(cross_entropy_term("crt-ce", PLUGIN))
    run.add_stage(stage, after=run.main_stage.name)
    run.register(Retraining(stage, reinitialisation_seed(run)), PLUGIN)
