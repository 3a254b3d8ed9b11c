"""The GML teacher: trained in the run's own ``teacher`` stage, or loaded from an earlier run.

The teacher is a backbone with a cosine classifier trained with logit-adjusted CE only
(GML paper, sec. 3.3). It is attached to the run as the module ``teacher``, so every checkpoint
and the final ``model.pt`` carry it, together with its architecture (backbone, classifier kind,
cosine scale) as the module's extra state; a later run can therefore reuse it with
``--set gml.teacher=<run id or path>``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ltcore import ConfigError, DataError, ModelBundle, load_safely

TEACHER_STAGE = "teacher"
TEACHER_MODULE = "teacher"
KEY_ENCODER_MODULE = "gml_key_encoder"
_RUN_ID = re.compile(r"^[0-9a-fA-F]{32}$")


class TeacherBundle(ModelBundle):
    """A :class:`~ltcore.models.ModelBundle` that remembers its architecture in its state dict.

    ``arch`` holds ``backbone`` (registered name), ``classifier`` (head name) and
    ``cosine_scale``; it is saved as the module's extra state.
    """

    def __init__(self, backbone: torch.nn.Module, classifier: torch.nn.Module, arch: dict[str, Any]):
        super().__init__(backbone, classifier)
        self.arch = dict(arch)

    def get_extra_state(self) -> dict[str, Any]:
        return dict(self.arch)

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.arch = dict(state)


def build_teacher(run, backbone: str, classifier: str = "cosine",
                  cosine_scale: float | None = None) -> TeacherBundle:
    """A fresh teacher network on the run's device."""
    bundle = run.build_model(classifier, backbone=backbone)
    scale = run.config.model.cosine_scale if cosine_scale is None else cosine_scale
    if classifier == "cosine":
        bundle.classifier.scale = scale
    arch = {"backbone": backbone, "classifier": classifier, "cosine_scale": float(scale)}
    return TeacherBundle(bundle.backbone, bundle.classifier, arch).to(run.device)


def teacher_stage(run, backbone: str | None = None, epochs: int | None = None, la_tau: float = 1.0,
                  plugin: str = "gml", model: TeacherBundle | None = None):
    """A stage that trains a cosine-classifier teacher with logit-adjusted CE.

    It uses the run's classifier view pipeline, optimiser, schedule and sampler; ``backbone``
    defaults to ``model.backbone`` and ``epochs`` to the main stage's. The caller attaches the
    model with ``run.add_module`` and the stage with ``run.add_stage``.
    """
    from ltcore import logit_adjusted_term

    model = model or build_teacher(run, backbone or run.config.model.backbone)
    stage = run.new_stage(TEACHER_STAGE, epochs or run.config.epochs, plugin=plugin, model=model)
    run.classifier_view(stage)
    stage.set_classifier_loss(logit_adjusted_term(run, la_tau, plugin=plugin), default=True)
    return stage


class KeyEncoder(torch.nn.Module):
    """The momentum key encoder of ``gml.key_encoder = momentum`` (Table 5 without
    teacher-student): a copy of the student's backbone that follows it as
    ``key <- m key + (1 - m) student`` (the reference code's MoCo encoder without ``--path_t``).
    It has no classifier, so there is no distillation."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        import copy

        self.backbone = copy.deepcopy(backbone)
        self.requires_grad_(False)

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim


def momentum_key_encoder(run, options, backbone: torch.nn.Module) -> KeyEncoder:
    """The student's momentum copy; a reused teacher is refused (there is none in this mode)."""
    if options.teacher:
        raise ConfigError(f"gml.teacher = {options.teacher!r} names a teacher, but "
                          "gml.key_encoder = momentum takes its keys from a momentum copy of "
                          "the student; leave gml.teacher empty or use gml.key_encoder = teacher")
    return KeyEncoder(backbone).to(run.device)


@torch.no_grad()
def momentum_update(target: torch.nn.Module, source: torch.nn.Module, momentum: float) -> None:
    """``t <- m t + (1 - m) s`` for every parameter pair (buffers are left to the target's own
    forward passes, as MoCo's ``_momentum_update_key_encoder``)."""
    targets = [p for p in target.parameters()]
    sources = [p.detach().to(t.dtype) for p, t in zip(source.parameters(), targets)]
    torch._foreach_mul_(targets, momentum)
    torch._foreach_add_(targets, sources, alpha=1.0 - momentum)


def freeze(teacher: torch.nn.Module) -> None:
    """No gradients and evaluation mode (BatchNorm uses its running statistics)."""
    teacher.requires_grad_(False)
    teacher.eval()


# -- loading ------------------------------------------------------------------------------


def locate(source: str, output: str, tracking_uri: str) -> tuple[Path, str | None]:
    """The file behind ``gml.teacher``, and a temporary folder to delete after loading.

    ``source`` is a path to an ltcore ``model.pt`` / ``checkpoint.pt`` (or a run folder holding
    one), or an MLflow run id or run folder name: the run folder's ``model.pt`` under ``output``
    when present, else its ``checkpoints/model.pt`` artifact, downloaded with the MLflow client.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return path, None
    if path.is_dir():
        for name in ("model.pt", "checkpoint.pt"):
            if (path / name).is_file():
                return path / name, None
        raise DataError(f"gml.teacher: folder {source!r} holds no model.pt or checkpoint.pt")
    from ltcore import find_run_folder

    try:
        local = find_run_folder(output, source)[0] / "model.pt"
    except DataError:
        local = Path(output) / source / "model.pt"
    if local.is_file():
        return local, None
    if not _RUN_ID.match(source):
        raise DataError(f"gml.teacher: {source!r} is neither an existing file nor an MLflow run id "
                        f"(32 hex digits); give the path of an ltcore model.pt or checkpoint.pt")
    from mlflow.artifacts import download_artifacts

    folder = tempfile.mkdtemp(prefix="ltcore-gml-teacher-")
    try:
        found = download_artifacts(run_id=source, artifact_path="checkpoints/model.pt",
                                   dst_path=folder, tracking_uri=tracking_uri)
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise DataError(f"gml.teacher: run {source!r} has no {local} and its artifact "
                        f"checkpoints/model.pt could not be downloaded from {tracking_uri!r} "
                        f"({type(exc).__name__}: {exc}); give --output of that run or the "
                        "path of its model.pt") from exc
    return Path(found), folder


def load_teacher(run, source: str, which: str = "auto", backbone: str = "") -> TeacherBundle:
    """The teacher stored in ``source`` (see :func:`locate`), frozen, on the run's device.

    ``which`` picks the network of the saved run: ``teacher`` (an earlier GML run's teacher),
    ``model`` (its main model) or ``auto`` (``teacher`` where present). Its architecture comes
    from the saved teacher's extra state, else from the saved run's settings; ``backbone``,
    when given, must agree with it.
    """
    path, folder = locate(source, run.config.output, run.tracking_uri)
    try:
        saved = load_safely(path)
        modules, settings = saved["modules"], saved.get("settings", {})
    except DataError as exc:
        raise DataError(f"gml.teacher: {exc}") from None
    except Exception as exc:
        raise DataError(f"gml.teacher: {str(path)!r} is not an ltcore model.pt or checkpoint.pt "
                        f"({type(exc).__name__}: {exc})") from exc
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    if which == "auto":
        which = TEACHER_MODULE if any(k.startswith(TEACHER_MODULE + ".") for k in modules) else "model"
    prefix = which + "."
    state = {k[len(prefix):]: v for k, v in modules.items() if k.startswith(prefix)}
    if not state:
        raise DataError(f"gml.teacher: {str(path)!r} has no network named {which!r}; it holds "
                        f"{', '.join(sorted({k.split('.')[0] for k in modules}))}")
    arch = _architecture(state, settings, which)
    if backbone and backbone != arch["backbone"]:
        raise ConfigError(f"gml.teacher_backbone is {backbone!r}, but the teacher in "
                          f"{str(path)!r} is a {arch['backbone']!r}; leave gml.teacher_backbone "
                          "empty when loading a teacher")
    classes = state["classifier.weight"].shape[0]
    if classes != run.dataset.num_classes:
        raise DataError(f"gml.teacher: the network in {str(path)!r} has {classes} classes, but "
                        f"dataset {run.dataset.name!r} has {run.dataset.num_classes}")
    teacher = build_teacher(run, arch["backbone"], arch["classifier"], arch["cosine_scale"])
    keep = {k: v for k, v in state.items() if k.startswith(("backbone.", "classifier."))}
    keep["_extra_state"] = teacher.get_extra_state()
    try:
        teacher.load_state_dict(keep)
    except RuntimeError as exc:
        raise DataError(f"gml.teacher: the weights in {str(path)!r} do not fit a "
                        f"{arch['backbone']!r} with a {arch['classifier']!r} classifier: {exc}") from exc
    freeze(teacher)
    return teacher


def _architecture(state: dict, settings: dict, which: str) -> dict[str, Any]:
    if isinstance(state.get("_extra_state"), dict):
        return dict(state["_extra_state"])
    model = settings.get("model", {})
    if "backbone" not in model:
        raise DataError("gml.teacher: the saved file records neither the teacher's architecture "
                        "nor the run's settings")
    if which == TEACHER_MODULE:
        backbone = settings.get("gml", {}).get("teacher_backbone") or model["backbone"]
        return {"backbone": backbone, "classifier": "cosine",
                "cosine_scale": float(model.get("cosine_scale", 30.0))}
    return {"backbone": model["backbone"], "classifier": model.get("classifier", "linear"),
            "cosine_scale": float(model.get("cosine_scale", 30.0))}
