"""Bad input, generated (hypothesis): the configuration parser and the CLI never show a
traceback; dataset constructors give a dataset or a DataError for any imbalance factor >= 1 and
classes with zero or one image; every core loss is finite, with finite gradients, for random
shapes, classes absent from the batch and single-class batches."""

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltcore import losses
from ltcore.config import RunConfig, field_docs
from ltcore.errors import DataError
from ltcore.testing import assert_finite_with_gradients, invoke_ltrun, label_batches

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = [key for key, *_ in field_docs(RunConfig)] + ["la.tau", "bcl.temperature", "nope.x"]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
VALUES = st.one_of(TEXT, st.integers(), st.floats(), st.booleans(),
                   st.sampled_from(["nan", "inf", "-inf", "[1, 2]", "{a = 1}", "1e999", '"x"',
                                    "[[]]", "\u202e", "\x00", "99999999999999999999999"]))


def cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = invoke_ltrun(*args)
    return code, err.getvalue()


def assert_clean(code: int, err: str) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err, err


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(KEYS) | TEXT, VALUES), max_size=4),
       st.one_of(st.none(), st.integers(), st.floats(allow_nan=True)),
       st.sampled_from([[], ["--plugin", "la"], ["--plugin", "nope"], ["--preset", "cifar10-lt"]]))
def test_the_cli_never_shows_a_traceback(assignments, number, plugins):
    args = [*plugins, "--print-config"]
    for key, value in assignments:
        args += ["--set", f"{key}={value}"]
    if number is not None:
        args += ["--seed", str(number), "--imbalance-factor", str(number)]
    assert_clean(*cli(*args))


@SETTINGS
@given(st.binary(max_size=200) | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_config_file_gives_a_config_or_one_line(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_bytes(content)
        assert_clean(*cli("--config", str(path), "--print-config"))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 200), st.floats(1, 1e9))
def test_long_tail_counts_for_any_factor(n_max, classes, factor):
    from ltcore.data import long_tail_counts, long_tail_indices

    counts = long_tail_counts(n_max, classes, factor)
    assert len(counts) == classes and counts[0] == n_max
    assert all(a >= b >= 0 for a, b in zip(counts, counts[1:]))
    labels = np.repeat(np.arange(classes), n_max)
    try:
        kept = long_tail_indices(labels, classes, factor, n_max)
    except DataError as exc:
        assert "without a training image" in str(exc)
        return
    assert torch.bincount(torch.as_tensor(labels)[kept], minlength=classes).tolist() == counts


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=4), st.floats(1, 1e6))
def test_image_folders_with_empty_and_single_image_classes(per_class, factor):
    from PIL import Image

    from ltcore.data import imagefolder_lt

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for c, n in enumerate(per_class):
            (root / "train" / f"c{c}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8, 3), 40 * c, np.uint8)).save(
                    root / "train" / f"c{c}" / f"{i}.png")
        try:
            ds = imagefolder_lt(str(root), factor)
        except DataError:
            return
        assert ds.num_classes == len(per_class) and bool((ds.class_counts >= 1).all())


@settings(max_examples=10, deadline=None)
@given(st.floats(1, 1e9))
def test_digits_for_any_factor(factor):
    from ltcore.data import digits_lt

    try:
        ds = digits_lt(factor)
    except DataError:
        return
    assert bool((ds.class_counts >= 1).all()) and ds.class_counts.max() == 124


@settings(max_examples=60, deadline=None)
@given(label_batches(), st.integers(1, 8), st.floats(0.05, 1.0), st.integers(0, 3))
def test_contrastive_losses_are_finite(batch, dim, temperature, k):
    labels, _ = batch
    labels = torch.tensor(labels)
    z = F.normalize(torch.randn(2 * len(labels), dim, dtype=torch.float64), dim=1)
    z.requires_grad_(True)
    stacked = torch.cat([labels, labels])
    assert_finite_with_gradients(losses.supcon_loss(z, stacked, temperature), z)
    z.grad = None
    assert_finite_with_gradients(losses.kcl_loss(z, stacked, temperature, k, n_views=2), z)
    z.grad = None
    bias = torch.log(torch.rand(len(stacked), dtype=torch.float64) * 100 + 1)[None, :]
    assert_finite_with_gradients(losses.supcon_loss(z, stacked, temperature, logit_bias=bias), z)


@settings(max_examples=60, deadline=None)
@given(label_batches(), st.floats(0, 3), st.floats(0, 5), st.floats(0.5, 10))
def test_classification_losses_are_finite(batch, tau, gamma, temperature):
    labels, classes = batch
    targets = torch.tensor(labels)
    counts = torch.randint(1, 500, (classes,))
    prior = counts.float() / counts.sum()
    for loss in (
        lambda x: losses.logit_adjusted_cross_entropy(x, targets, prior, tau),
        lambda x: losses.balanced_softmax_loss(x, targets, counts),
        lambda x: losses.ldam_loss(torch.tanh(x), targets, losses.ldam_margins(counts), 30.0,
                                   weight=losses.class_balanced_weights(counts, 0.999)),
        lambda x: losses.focal_loss(x, targets, gamma),
        lambda x: losses.distillation_kl(x, torch.randn_like(x) * 5, temperature),
    ):
        logits = (10 * torch.randn(len(labels), classes)).requires_grad_(True)
        assert_finite_with_gradients(loss(logits), logits)


@pytest.mark.parametrize("text", ["epochs = 3\n[optim]\nlr = 1e999\n", "seed = -5\n",
                                  "batch_size = 0\n", "[eval]\nmetrics = {a = 1}\n"])
def test_bad_values_in_a_file_are_one_line(text, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(text)
    code, err = cli("--config", str(path), "--print-config")
    assert code == 2 and "Traceback" not in err and err.count("Error:") == 1, err
