"""A run's final model as an MLflow Model.

The network and its preprocessing are exported together with ``torch.export`` and saved with
MLflow's ``pytorch`` flavour (its ``pt2`` format: a graph and tensors, nothing pickled), with a
signature, an input example, the class names and the preprocessing, so that
``mlflow.pyfunc.load_model('runs:/<run id>/model')`` predicts from raw images without ltcore
and ``mlflow models serve`` and the Model Registry apply. The pip requirements are given
(torch), so MLflow does not infer them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from ..files import write_text
from ..standalone import PixelPreprocess, Preprocessing, TrainedModel

MLFLOW_MODEL = "mlflow_model"
"""The folder of a run that holds its MLflow Model, as logged."""
ARTIFACT_PATH = "model"
"""The name of the run's logged model: ``runs:/<run id>/model``."""
PREPROCESSING = "preprocessing.json"
"""The file beside the model that says how its input is made (:meth:`Preprocessing.to_dict`),
with the class names."""


class ImageModel(nn.Module):
    """Raw images to logits: uint8 ``[B, H, W, C]`` (the layout PIL and numpy decode to) of any
    size, through the preprocessing and the network."""

    def __init__(self, model: TrainedModel, preprocessing: Preprocessing):
        super().__init__()
        self.preprocess = PixelPreprocess(preprocessing)
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(images.permute(0, 3, 1, 2)))


def model_config(model: TrainedModel, preprocessing: Preprocessing) -> dict:
    """The class names and preprocessing of ``model``, as the JSON beside a saved model."""
    return {"num_classes": len(model.classes), "label_names": model.classes,
            "pretrained_cfg": preprocessing.to_dict()}


def save_mlflow_model(model: TrainedModel, preprocessing: Preprocessing, folder: Path) -> Path:
    """Export ``model`` with its preprocessing and save it as an MLflow Model in ``folder``
    (built beside it and renamed into place, so the folder is whole or absent)."""
    import mlflow.pytorch
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    channels = preprocessing.channels
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, channels))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(model.classes)))]))
    # two images that need both a resize and a crop: the export keeps every size dynamic
    example = (np.arange(2 * 10 * 14 * channels) % 251).astype(np.uint8).reshape(
        2, 10, 14, channels)
    config = model_config(model, preprocessing)
    building = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(building, ignore_errors=True)
    try:
        mlflow.pytorch.save_model(
            ImageModel(model, preprocessing).eval(), str(building), signature=signature,
            input_example=example, serialization_format="pt2", metadata={"ltcore": config},
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        write_text(building / PREPROCESSING, json.dumps(config, indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(building, folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def log_final_model(run, tracker, run_dir: Path, state: dict) -> str:
    """Save the final model of ``run`` (``state``, what its ``model.pt`` holds) as an MLflow
    Model in ``run_dir`` and log it as the run's model ``model``, registered under
    ``tracking.register_model`` when that is set; what happened, in a line. Raises when the
    model cannot be used on its own or cannot be exported (the run stands without it)."""
    from ..standalone import saved_model, standalone_of

    record = standalone_of(state, str(run_dir / "model.pt"))
    model = saved_model(state, record, run.plugins, str(run_dir / "model.pt")).eval()
    folder = save_mlflow_model(model, Preprocessing.from_dict(record["preprocessing"]),
                               run_dir / MLFLOW_MODEL)
    name = run.config.tracking.register_model
    uri = f"runs:/{run.run_id}/{ARTIFACT_PATH}"
    if not tracker.log_model(run.run_id, str(folder), ARTIFACT_PATH, name):
        return (f"MLflow Model saved in {folder}; it is logged as {uri} once the tracking "
                "store takes it")
    return f"MLflow Model logged: {uri}" + (f", registered as {name!r}" if name else "")
