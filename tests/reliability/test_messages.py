"""Every way a command can fail on what it was given ends in one line and exit 2: a checkpoint
that is empty, truncated, not a PyTorch file, not ltcore's or unsafe (each told apart), an
unknown device, an allocation that cannot succeed, and a class left without images (named by
its folder)."""

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ltcore.engine import checkpoints
from ltcore.testing import FAST, recorded_runs

EXPECTED_KEYS = ("where a run's checkpoint.pt or model.pt holds a dict with 'settings', "
                 "'plugins', 'modules'")
COPY_AGAIN = "copy the file again from where it was saved"


class Payload:
    """Writes the file named in its state when unpickled: a load that ran it leaves the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __setstate__(self, state):
        Path(state["marker"]).write_text("ran")


def truncated(path: Path) -> None:
    torch.save({"weights": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def unsafe_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(path.with_name("ran"))))


def unsafe_archive(path: Path) -> None:
    torch.save({"weights": torch.zeros(2), "payload": Payload(path.with_name("ran"))}, path)


REFUSED = (f"is refused: loading it would run code it carries (it imports {Payload.__module__}"
           f".Payload, which is neither a tensor nor a plain value); nothing in it was run. "
           f"ltcore's checkpoints and models hold tensors and plain values only")


FILES = {
    "empty": (lambda path: path.write_bytes(b""),
              "is empty (0 bytes): there is nothing to load; " + COPY_AGAIN),
    "truncated": (truncated,
                  "is truncated: a PyTorch zip archive whose end is missing (cut short, e.g. "
                  "by an interrupted copy or download); " + COPY_AGAIN),
    "random bytes": (lambda path: path.write_bytes(random.Random(0).randbytes(4096)),
                     "is not a PyTorch file: neither a torch.save archive nor a pickle (it starts "
                     "with {head!r})"),
    "text": (lambda path: path.write_text("model weights go here\n"),
             "is not a PyTorch file: neither a torch.save archive nor a pickle (it starts with "
             "b'model weights go')"),
    "unsafe pickle": (unsafe_pickle, REFUSED),
    "unsafe archive": (unsafe_archive, REFUSED),
    "a tensor": (lambda path: torch.save(torch.zeros(3), path),
                 "is not an ltcore checkpoint: it holds a tensor of shape (3,), " + EXPECTED_KEYS),
    "a state dict": (lambda path: torch.save({"fc.weight": torch.zeros(2)}, path),
                     "is not an ltcore checkpoint: it holds a dict with keys 'fc.weight', "
                     + EXPECTED_KEYS),
}


def one_line(result, expected: str) -> None:
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [f"Error: {expected}"]


@pytest.mark.parametrize("kind", FILES)
def test_each_unreadable_checkpoint_is_told_apart(ltrun, tmp_path, kind):
    write, message = FILES[kind]
    path = tmp_path / "checkpoint.pt"
    write(path)
    head = path.read_bytes()[:16]
    one_line(ltrun("evaluate", "--checkpoint", str(path)),
             f"{str(path)!r} {message.format(head=head)}")
    assert not path.with_name("ran").exists()


def test_resume_of_a_truncated_checkpoint(ltrun):
    path = Path("runs", "0123456789abcdef0123456789abcdef", checkpoints.CHECKPOINT)
    path.parent.mkdir(parents=True)
    truncated(path)
    one_line(ltrun("--resume", path.parent.name), f"{str(path)!r} {FILES['truncated'][1]}")


@pytest.mark.parametrize("device", ["tpu", "cuda0", "gpu:1"])
def test_an_unknown_device_lists_the_valid_ones(ltrun, device):
    one_line(ltrun(*FAST, "--device", device),
             f"unknown device {device!r}; use auto, cpu, cuda or cuda:N (N: a GPU's index)")
    assert not recorded_runs()


def test_an_impossible_allocation_while_setting_up_is_one_line(ltrun):
    pytest.importorskip("ltcore_bcl")
    one_line(ltrun("--plugin", "bcl", *FAST, "--device", "cpu",
                   "--set", "model.projection_hidden=1000000000000000"),
             "out of CPU memory: an allocation of 238,418,579.1 GiB failed; lower the sizes the "
             "settings ask for (--batch-size, eval.batch_size, the model's widths such as "
             "model.projection_hidden) or use a machine with more memory")


def test_a_gpu_allocation_failure_says_how_much_was_asked_for():
    from ltcore.errors import is_out_of_memory, out_of_memory_message

    exc = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
                                 "total capacity of 79.19 GiB of which 1.06 GiB is free.")
    assert is_out_of_memory(exc) and not is_out_of_memory(RuntimeError("shape mismatch"))
    assert out_of_memory_message(exc) == (
        "out of GPU memory: an allocation of 2.00 GiB failed; lower the sizes the settings ask "
        "for (--batch-size, eval.batch_size, the model's widths such as model.projection_hidden) "
        "or use a machine with more memory")


OUT_OF_MEMORY_IN_A_STEP = '''
import torch

from ltcore import hookimpl


@hookimpl
def adjust_images(step):
    torch.empty(2 ** 60, dtype=torch.uint8)
'''


def test_an_impossible_allocation_in_a_step_keeps_the_run_resumable(ltrun, isolated):
    plugin = isolated / "oom_step.py"
    plugin.write_text(OUT_OF_MEMORY_IN_A_STEP)
    one_line(ltrun("--plugin", "ce", "--plugin", str(plugin), *FAST, "--device", "cpu",
                   "--epochs", "1"),
             "cpu ran out of memory in stage 'train' at batch size 64 (1 views per image): use "
             "a smaller --batch-size (e.g. 32, with optim.lr scaled alike, or optim.accumulate "
             "to keep the effective batch) or a smaller model")
    (parent,) = recorded_runs(nested=False)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["ltcore.error"].startswith("DeviceMemoryError: cpu ran out")
    (saved,) = isolated.glob(f"runs/*/{checkpoints.CHECKPOINT}")
    assert checkpoints.read(saved)["position"] == (0, 0)


def image_tree(root: Path, train_counts: dict[str, int]) -> Path:
    """An ImageFolder tree: ``train/<class>`` with the given number of images, ``val/<class>``
    with one each."""
    from PIL import Image

    for split in ("train", "val"):
        for name, count in train_counts.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count if split == "train" else 1):
                Image.fromarray(np.full((8, 8, 3), 40, np.uint8)).save(folder / f"{i}.png")
    return root


def test_a_class_folder_without_images_is_named(ltrun, tmp_path):
    tree = image_tree(tmp_path / "tree", {"cat": 3, "dog": 3, "emu": 0})
    one_line(ltrun("datasets", "--dataset", "imagefolder-lt", "--data-dir", str(tree)),
             "imagefolder-lt: class(es) 'emu' (2) have no training image; every class needs at "
             "least one")


def test_a_class_the_long_tail_empties_is_named(ltrun, tmp_path):
    tree = image_tree(tmp_path / "tree", {"ant": 4, "bee": 4, "cow": 4})
    one_line(ltrun("datasets", "--dataset", "imagefolder-lt", "--data-dir", str(tree),
                   "--imbalance-factor", "100"),
             "with 4 images in the largest class, imbalance factor 100 leaves class(es) 'bee' "
             "(1), 'cow' (2) without a training image; use an imbalance factor of at most 4 or "
             "more images")


def test_an_unreadable_pretrained_weights_file_is_one_line(ltrun, tmp_path):
    path = tmp_path / "weights.pth"
    FILES["text"][0](path)
    one_line(ltrun(*FAST, "--set", f"model.pretrained={path}"),
             f"{str(path)!r} {FILES['text'][1]}")
