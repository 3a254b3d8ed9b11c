"""Pack CIFAR-10-LT IF 100 small enough to travel with the working tree, and unpack it.

``pack`` writes one gzipped tar holding the JPEGs that ``imagefolder-lt --imbalance-factor
100`` keeps from a CIFAR-10 ImageFolder tree (12,406 of the 50,000 training images), every
validation image and the list of all the training file names: about 5 MB from the shared tree.
``unpack`` restores the tree with the names it does not hold as empty
files: ``imagefolder-lt`` selects its subset from the sorted names alone and opens only the
images it keeps, so the unpacked tree gives exactly the dataset (same images, same order) the
full tree gives.

    python benchmarks/pack_data.py pack .gpu-data/cifar10-lt-if100.tar.gz
    python benchmarks/pack_data.py unpack .gpu-data/cifar10-lt-if100.tar.gz /tmp/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

from ltcore.data import _list_folder, long_tail_indices

NAMES = "train-names.txt"


def pack(source: Path, target: Path, imbalance_factor: float) -> None:
    classes, paths, labels = _list_folder(source / "train")
    keep = long_tail_indices(labels, len(classes), imbalance_factor, class_names=classes).tolist()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as tar:
        for i in sorted(keep):
            tar.add(paths[i], arcname=str(Path(paths[i]).relative_to(source)))
        for path in sorted((source / "val").rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(source)))
        names = "\n".join(str(Path(p).relative_to(source)) for p in paths).encode()
        info = tarfile.TarInfo(NAMES)
        info.size = len(names)
        tar.addfile(info, io.BytesIO(names))
    print(f"{target}: {len(keep)} training and the validation images, "
          f"{target.stat().st_size / 2 ** 20:.1f} MiB")


def unpack(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    names = (target / NAMES).read_text().split("\n")
    for name in names:
        path = target / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    print(f"{target}: {len(names)} training names, the kept images and val/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="write the tar")
    packing.add_argument("target", type=Path)
    packing.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2]
                         / "shared" / "data" / "cifar10-jpeg")
    packing.add_argument("--imbalance-factor", type=float, default=100.0)
    unpacking = commands.add_parser("unpack", help="restore the tree from the tar")
    unpacking.add_argument("archive", type=Path)
    unpacking.add_argument("target", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.source, args.target, args.imbalance_factor)
    else:
        unpack(args.archive, args.target)


if __name__ == "__main__":
    main()
