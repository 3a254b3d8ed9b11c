"""Manifest datasets: images listed in a CSV or JSON lines file rather than laid out in folders.

A manifest has a row per image: ``path`` (absolute, or relative to the manifest's folder),
``label`` (the class name) and optionally ``split`` (``train``, ``val`` or ``test``; empty or
absent: ``train``). CSV files have a header row naming the columns; JSON lines files hold one
object per line. The classes are the labels of the training rows, sorted (as numbers when every
label is a whole number). Every row is checked before an image is read: a missing image, a
label no training row has, an unknown split or an image listed twice is refused naming the
line.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch

from .data import Dataset, image_files_dataset
from .errors import DataError

SPLITS = ("train", "val", "test")
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
"""The files ``--data-dir`` may name a folder by: the manifest is the one it holds."""

Row = tuple[int, str, str, str]
"""(line number, image path as written, label, split) of one manifest row."""


def manifest_file(data_dir: str) -> Path:
    """The manifest ``data_dir`` names: the file itself, or the manifest.csv/.jsonl in it."""
    if not data_dir:
        raise DataError("manifest-lt needs --data-dir FILE: a .csv or .jsonl manifest with a "
                        "path and a label per image (or a folder holding manifest.csv)")
    path = Path(data_dir)
    if path.is_dir():
        found = [path / name for name in MANIFEST_NAMES if (path / name).is_file()]
        if len(found) != 1:
            raise DataError(f"folder {str(path)!r} holds {'both' if found else 'neither'} of "
                            f"{' and '.join(MANIFEST_NAMES)}; give the manifest file itself as "
                            "--data-dir")
        return found[0]
    if not path.is_file():
        raise DataError(f"manifest {str(path)!r} does not exist")
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise DataError(f"manifest {str(path)!r} is neither .csv nor .jsonl")
    return path


def read_rows(path: Path) -> list[Row]:
    """The rows of a manifest, each checked for a path, a label and a known split."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read manifest {str(path)!r}: {exc}") from exc
    is_csv = path.suffix.lower() == ".csv"
    records = _csv_records(path, text) if is_csv else _json_records(path, text)
    rows = []
    for line, record in records:
        image, label, split = (_text(record.get(key)) for key in ("path", "label", "split"))
        split = split or "train"
        if not image or not label:
            raise DataError(f"{path}:{line}: a row needs a path and a label, got "
                            f"path={image!r}, label={label!r}")
        if split not in SPLITS:
            raise DataError(f"{path}:{line}: split {split!r} is not one of {', '.join(SPLITS)}")
        rows.append((line, image, label, split))
    if not any(split == "train" for *_, split in rows):
        raise DataError(f"manifest {str(path)!r} has no training rows (split train or empty)")
    return rows


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _csv_records(path: Path, text: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    if "path" not in columns or "label" not in columns:
        raise DataError(f"manifest {str(path)!r} needs a header row with the columns path and "
                        f"label (and optionally split); its first row is {columns}")
    reader.fieldnames = columns
    try:
        return [(reader.line_num, record) for record in reader
                if any((v or "").strip() for v in record.values() if isinstance(v, str))]
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not a CSV row ({exc})") from None


def _json_records(path: Path, text: str) -> list[tuple[int, dict]]:
    records = []
    for line, content in enumerate(text.splitlines(), 1):
        if not content.strip():
            continue
        try:
            record = json.loads(content)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line}: not a JSON object ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line}: expected an object with path and label, got "
                            f"{content.strip()[:60]!r}")
        records.append((line, record))
    return records


def class_order(labels: set[str]) -> list[str]:
    """Class names sorted, as numbers when every one is a whole number (``2`` before ``10``)."""
    if all(label.isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def manifest_lt(data_dir: str, imbalance_factor: float | str, val_fraction: float = 0.0,
                test_fraction: float = 0.0, split_seed: int = 0) -> Dataset:
    """The images a manifest lists (:func:`ltcore.data.image_files_dataset`): its training rows
    made long-tailed or kept as they are (``natural``), its val and test rows as evaluation
    splits; a manifest with neither gets them split off its training images."""
    path = manifest_file(data_dir)
    rows = read_rows(path)
    classes = class_order({label for _, _, label, split in rows if split == "train"})
    index = {name: i for i, name in enumerate(classes)}
    seen: dict[str, int] = {}
    missing = []
    by_split: dict[str, tuple[list[str], list[int]]] = {split: ([], []) for split in SPLITS}
    for line, image, label, split in rows:
        if label not in index:
            shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
            raise DataError(f"{path}:{line}: label {label!r} of a {split} row is not a class of "
                            f"the training rows ({shown})")
        full = os.path.abspath(path.parent / image)
        if full in seen:
            raise DataError(f"{path}:{line}: image {image!r} is listed twice (also on line "
                            f"{seen[full]})")
        seen[full] = line
        if not os.path.isfile(full):
            missing.append((line, image))
        by_split[split][0].append(full)
        by_split[split][1].append(index[label])
    if missing:
        line, image = missing[0]
        raise DataError(f"{path}:{line}: image {image!r} does not exist ({len(missing)} of "
                        f"{len(rows)} listed images are missing; relative paths are read from "
                        f"{path.parent})")
    paths, labels = by_split["train"]
    evals = {split: (found, torch.tensor(split_labels).long())
             for split, (found, split_labels) in by_split.items() if split != "train" and found}
    return image_files_dataset("manifest-lt", classes, paths, labels, evals, str(path),
                               imbalance_factor, val_fraction, test_fraction, split_seed)
