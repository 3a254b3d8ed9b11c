"""Predictions of saved models: ``ltrun predict`` on unlabelled image files, and the per-class
and per-image tables ``ltrun evaluate`` adds to its figures.

``ltrun predict`` needs nothing of the run but its saved model (``ltcore.load_model``): images
are decoded and preprocessed as evaluation does, batched on the device, and each gets its top-k
classes with their probabilities (softmax of the logits evaluation computes, after any post-hoc
logit adjustment). An image that cannot be read is reported by path and skipped.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import attrs
import torch

from .data import IMAGE_SUFFIXES
from .errors import DataError
from .evaluation import FIGURE_DECIMALS


@attrs.frozen
class Prediction:
    """One image's top classes: ``(class index, probability)``, most probable first."""

    path: str
    top: list[tuple[int, float]]


def image_files(paths: Sequence[str]) -> list[Path]:
    """The images ``paths`` name: a file as it is, a folder's image files (by suffix, in its
    sub-folders too, sorted); a :class:`DataError` for a path that does not exist or when
    there is no image at all."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(f for f in path.rglob("*")
                                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{str(path)!r} does not exist; give image files or folders of them")
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in "
                        f"{', '.join(map(repr, paths))}")
    return files


@torch.no_grad()
def predict_files(model, preprocessing, files: Sequence[Path], device: torch.device,
                  batch_size: int = 64, top_k: int = 5, progress: bool = True,
                  warn: Callable[[str], None] | None = None
                  ) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """The top ``top_k`` classes of every image in ``files``, ``batch_size`` images at a time on
    ``device``, and the images skipped with the reason (each told to ``warn`` as it happens).
    A progress bar goes to standard error when ``progress`` and there is more than a batch."""
    from tqdm import tqdm

    from .data import load_image

    model = model.to(device).eval()
    k = min(top_k, len(model.classes))
    predictions: list[Prediction] = []
    skipped: list[tuple[str, str]] = []
    images: list[torch.Tensor] = []
    names: list[str] = []

    def classify() -> None:
        probabilities = model(torch.stack(images).to(device)).softmax(dim=1).cpu()
        values, indices = probabilities.topk(k, dim=1)
        for name, value, index in zip(names, values.tolist(), indices.tolist()):
            predictions.append(Prediction(name, list(zip(index, value))))
        images.clear()
        names.clear()

    bar = tqdm(total=len(files), unit="image", file=sys.stderr, desc="predict",
               disable=not progress or len(files) <= batch_size)
    with bar:
        for path in files:
            try:
                images.append(preprocessing(load_image(str(path))))
                names.append(str(path))
            except (DataError, OSError, ValueError) as exc:
                reason = str(exc.__cause__ or exc)  # load_image's error names the file again
                skipped.append((str(path), reason))
                if warn is not None:
                    warn(f"warning: skipped {str(path)!r}: {reason}")
            if len(images) == batch_size:
                classify()
            bar.update()
        if images:
            classify()
    return predictions, skipped


def prediction_table(predictions: list[Prediction], classes: list[str]) -> list[str]:
    """One line per image: its path, then each top class with its probability."""
    width = max((len(p.path) for p in predictions), default=0)
    return [f"{p.path:<{width}}  " + "  ".join(f"{classes[i]} {value:.4f}" for i, value in p.top)
            for p in predictions]


def prediction_records(predictions: list[Prediction], classes: list[str]) -> list[dict]:
    """The predictions as JSON-ready records: path and ``top`` (class, index, probability)."""
    return [{"path": p.path, "top": [{"class": classes[i], "index": i, "probability": value}
                                     for i, value in p.top]} for p in predictions]


def prediction_csv(predictions: list[Prediction], classes: list[str]) -> str:
    """The predictions as CSV text, one row per image and rank."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", "rank", "class", "index", "probability"])
    for p in predictions:
        for rank, (i, value) in enumerate(p.top, 1):
            writer.writerow([p.path, rank, classes[i], i, value])
    return text.getvalue()


def predictions_json(checkpoint: str, tau: float, predictions: list[Prediction],
                     skipped: list[tuple[str, str]], classes: list[str]) -> str:
    """What ``ltrun predict --json`` prints."""
    return json.dumps({"checkpoint": checkpoint, "posthoc_la_tau": tau,
                       "predictions": prediction_records(predictions, classes),
                       "skipped": [{"path": path, "error": error} for path, error in skipped]},
                      indent=2)


# -- what ltrun evaluate adds ----------------------------------------------------------------


def per_class_accuracy(evaluation) -> dict[str, list[dict]]:
    """Per split, each class's name, accuracy (percent, ``None`` without an image of it) and
    training images."""
    dataset = evaluation.run.dataset
    counts = dataset.class_counts.tolist()
    table = {}
    for split, outputs in evaluation.outputs.items():
        accuracy = outputs.per_class_accuracy().double().mul(100).tolist()
        table[split] = [{"class": name, "accuracy": None if value != value
                         else round(value, FIGURE_DECIMALS), "train_images": count}
                        for name, value, count in zip(dataset.classes, accuracy, counts)]
    return table


PREDICTION_COLUMNS = ["index", "path", "label", "label_name", "prediction", "prediction_name",
                      "probability"]


def write_test_predictions(evaluation, path: str | Path) -> int:
    """Write every test image's label and prediction (with its probability) as CSV to
    ``path``, atomically; the number of images. ``path`` is the image file where the split has
    files, else empty."""
    from .files import write_csv

    if "test" not in evaluation.outputs:
        raise DataError(f"dataset {evaluation.run.dataset.name!r} has no test split to write "
                        "predictions of")
    outputs = evaluation.outputs["test"]
    classes = evaluation.run.dataset.classes
    files = evaluation.run.dataset.test.paths or [""] * len(outputs.labels)
    probability, predicted = outputs.logits.softmax(dim=1).max(dim=1)
    rows = [[i, files[i], label, classes[label], guess, classes[guess], p]
            for i, (label, guess, p) in enumerate(zip(outputs.labels.tolist(),
                                                      predicted.tolist(), probability.tolist()))]
    write_csv(path, PREDICTION_COLUMNS, rows)
    return len(rows)
