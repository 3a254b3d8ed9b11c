"""Image files for the batched views: read in DataLoader workers, decoded where the views run.

Workers only read each file's bytes (:class:`EncodedImages`), so on a GPU the JPEG decoding runs
there, for a whole batch at once (``torchvision.io.decode_jpeg`` on the device), and the
batched view pipelines continue from the decoded images without a copy through the host. On the
CPU, or for a file that is not a JPEG, the worker decodes it itself. A file that cannot be
decoded stops the run with a :class:`~ltcore.errors.DataError` naming it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from ltcore.errors import DataError

JPEG_MAGIC = b"\xff\xd8\xff"


@contextmanager
def _torchvision_io() -> Iterator[None]:
    """torchvision 0.29 deprecates its image decoders in favour of TorchCodec and warns on
    every call; they remain the decoders of the torchvision releases GPU images ship."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message="The image decoding and encoding")
        yield


def _decode_on_cpu(data: Tensor, path: str) -> Tensor:
    import numpy as np
    from torchvision.io import ImageReadMode, decode_image

    from ltcore.data import load_image

    try:
        with _torchvision_io():
            return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError:  # PIL decodes more (and names the file when it cannot)
        return torch.from_numpy(np.asarray(load_image(path)).copy()).permute(2, 0, 1).contiguous()


class EncodedImages(torch.utils.data.Dataset):
    """Image files by index: the encoded bytes of a JPEG (a 1-d uint8 tensor) when
    ``decode_jpegs`` is False, else the decoded image ``[3, H, W]`` uint8 (also for any file
    that is not a JPEG)."""

    def __init__(self, paths: Sequence[str], decode_jpegs: bool):
        self.paths = paths
        self.decode_jpegs = decode_jpegs

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        from torchvision.io import read_file

        path = self.paths[index]
        try:
            with _torchvision_io():
                data = read_file(path)
        except RuntimeError as exc:
            raise DataError(f"cannot read image {path!r}: {exc}") from exc
        if self.decode_jpegs or bytes(data[:3].tolist()) != JPEG_MAGIC:
            return _decode_on_cpu(data, path)
        return data


def decode(items: Sequence[Tensor], paths: Sequence[str], device: torch.device) -> list[Tensor]:
    """The images ``[3, H, W]`` uint8 on ``device`` of what :class:`EncodedImages` returned for
    ``paths``: encoded JPEGs are decoded on ``device`` in one call, decoded images are moved."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out = [item.to(device, non_blocking=True) if item.ndim == 3 else None for item in items]
    encoded = [i for i, item in enumerate(items) if item.ndim == 1]
    if encoded:
        try:
            with _torchvision_io():
                decoded = decode_jpeg([items[i] for i in encoded], mode=ImageReadMode.RGB,
                                      device=device)
        except RuntimeError:  # one file the device decoder refuses (e.g. CMYK): each on its own
            decoded = [_decode_on_cpu(items[i], paths[i]).to(device) for i in encoded]
        for i, image in zip(encoded, decoded):
            out[i] = image
    return out


def as_list(batch: list[Tensor]) -> list[Tensor]:
    """DataLoader ``collate_fn`` that keeps a batch of images of different sizes as a list."""
    return batch
