"""``weight-norms``: an example plugin written as a third party would write one.

It shows the things most plugins do, through the public API alone (``from ltcore import ...``):

- options (an attrs class) and a preset;
- a registered loss other plugins can build by name (``label-smoothing``);
- ``setup_run``, which makes that loss the classifier loss of the main stage;
- a lifecycle hook, ``epoch_end``, adding a metric: the mean norm of the classifier's weight rows
  per shot group. Long-tailed training makes head-class rows longer than tail-class rows; the
  ratio shows how strongly a method rebalances the classifier;
- ``run_end`` and ``run_failed``, recording a table with the last norm of every class's row as an
  artifact of the run (``weights/norms.csv``), also when the run fails: a run that diverged is
  where the norms say most.

Install with ``pip install -e examples/weight-norms`` and run
``ltrun --plugin weight-norms --epochs 3``.
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl


@attrs.define(kw_only=True)
class Options:
    smoothing: float = doc("label-smoothing factor of the classifier loss", default=0.1,
                           validator=[attrs.validators.ge(0), attrs.validators.lt(1)])


def label_smoothing_term(run, smoothing: float = 0.1, weight: float = 1.0):
    """Cross-entropy with label smoothing on the classifier view."""
    import torch.nn.functional as F

    from ltcore import classifier_term

    return classifier_term("label-smoothing", "weight-norms",
                           lambda logits, y: F.cross_entropy(logits, y, label_smoothing=smoothing),
                           weight)


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_presets(register):
    register("strong", {"weight-norms.smoothing": 0.3}, "smoothing 0.3")


@hookimpl
def register_losses(register):
    register("label-smoothing", label_smoothing_term)


@hookimpl
def setup_run(run):
    run.classifier_view()
    smoothing = run.option("weight-norms").smoothing
    run.main_stage.set_classifier_loss(label_smoothing_term(run, smoothing))


@hookimpl
def epoch_end(run, stage, epoch, metrics):
    from ltcore.metrics import shot_groups

    norms = stage.model.classifier.weight.detach().norm(dim=1).cpu()
    groups = shot_groups(run.dataset.class_counts, run.config.eval.many_threshold,
                         run.config.eval.few_threshold)
    for group, classes in groups.items():
        metrics[f"weights/norm_{group}"] = float(norms[classes].mean())


def record_norms(run) -> None:
    """The norm of every class's classifier row, as the table ``weights/norms.csv`` of the run."""
    norms = run.model.classifier.weight.detach().norm(dim=1).cpu().tolist()
    counts = run.dataset.class_counts.tolist()
    run.recorder.table("weights/norms.csv", ["class_index", "class", "train_count", "norm"],
                       [[i, name, n, f"{norm:.6f}"] for i, (name, n, norm)
                        in enumerate(zip(run.dataset.classes, counts, norms))])


@hookimpl
def run_end(run):
    record_norms(run)


@hookimpl
def run_failed(run, error):
    record_norms(run)
