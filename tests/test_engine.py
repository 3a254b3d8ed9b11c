"""Schedules, seeds, batching and errors of the engine."""

import pytest
import torch

from ltcore.config import OptimConfig, ScheduleConfig
from ltcore.engine.backends import batch_rows
from ltcore.engine.schedule import learning_rate
from ltcore.run import Stage, epoch_seed


def stage(epochs=10, **schedule):
    return Stage(name="s", epochs=epochs, model=None, optim=OptimConfig(lr=1.0),
                 schedule=ScheduleConfig(**schedule), sampler="instance-balanced", plugin="t")


def test_warmup_then_step():
    s = stage(10, kind="step", warmup_epochs=5, milestones=(7, 9), gamma=0.1)
    assert [round(learning_rate(s, e), 6) for e in range(10)] == [
        0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01]


def test_cosine_after_warmup():
    s = stage(12, kind="cosine", warmup_epochs=2)
    lrs = [learning_rate(s, e) for e in range(12)]
    assert lrs[:2] == [0.5, 1.0] and lrs[2] == 1.0
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[-1] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi * 9 / 10)).item()))


def test_epoch_seeds_differ_by_stage_and_epoch():
    seeds = {epoch_seed(0, s, e) for s in range(3) for e in range(200)}
    assert len(seeds) == 600


def test_batch_rows_never_leave_a_single_sample():
    rows = batch_rows(torch.arange(129).unsqueeze(1), 64)
    assert [len(r) for r in rows] == [64, 64]
    rows = batch_rows(torch.arange(130).unsqueeze(1), 64)
    assert [len(r) for r in rows] == [64, 64, 2]


def test_debug_shows_traceback_and_default_does_not(ltrun):
    plain = ltrun("--set", "optim.lr=-1")
    assert plain.exit_code == 2 and "Traceback" not in plain.stderr
    from ltcore.errors import ConfigError

    with pytest.raises(ConfigError):
        ltrun("--set", "optim.lr=-1", "--debug")


def test_corrupt_image_cli_error(ltrun, tmp_path):
    import numpy as np
    from PIL import Image

    for split in ("train", "val"):
        for c in range(2):
            folder = tmp_path / "d" / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "d" / "val" / "c1" / "2.png").write_bytes(b"\x89PNG broken")
    result = ltrun("--dataset", "imagefolder-lt", "--data-dir", str(tmp_path / "d"),
                   "--imbalance-factor", "2", "--epochs", "1", "--no-progress")
    assert result.exit_code == 2
    assert "cannot decode image" in result.stderr and "c1/2.png" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_optimiser_is_chosen_by_name(tmp_path):
    from ltcore.config import resolve
    from ltcore.engine.runs import prepare
    from ltcore.engine.schedule import build_optimizer, parameter_groups
    from ltcore.errors import ConfigError
    from ltcore.plugins import Plugins
    from ltcore.testing import FAST_SETTINGS

    plugins = Plugins()
    for name, kind in (("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)):
        settings = resolve(plugins, ["ce"], assignments=[*FAST_SETTINGS, f"optim.name={name}",
                                                         "optim.betas=[0.8, 0.99]"])
        run = prepare(plugins, ["ce"], settings)
        stage = run.main_stage
        optimizer = build_optimizer(run, stage, parameter_groups(run, stage))
        assert type(optimizer) is kind
        assert optimizer.defaults["weight_decay"] == settings.run.optim.weight_decay
        if kind is torch.optim.AdamW:
            assert optimizer.defaults["betas"] == (0.8, 0.99)
    from timm.optim import Lamb

    for name, kind in (("lamb", Lamb), ("timm:sgd", torch.optim.SGD)):
        settings = resolve(plugins, ["ce"], assignments=[*FAST_SETTINGS, f"optim.name={name}",
                                                         "optim.betas=[0.8, 0.99]",
                                                         "optim.options={eps = 1e-7}"])
        run = prepare(plugins, ["ce"], settings)
        optimizer = build_optimizer(run, run.main_stage, parameter_groups(run, run.main_stage))
        assert type(optimizer) is kind
        if kind is Lamb:  # timm's, with the betas and options given
            assert optimizer.defaults["betas"] == (0.8, 0.99)
            assert optimizer.defaults["eps"] == 1e-7
        else:  # timm's sgd is Nesterov's
            assert optimizer.defaults["nesterov"] is True
    with pytest.raises(ConfigError, match="unknown optimizer 'nope'.*adamw, sgd.*timm"):
        resolve(plugins, ["ce"], assignments=[*FAST_SETTINGS, "optim.name=nope"])


def test_adamw_trains(ltrun, isolated):
    from ltcore.testing import FAST

    from ltcore.testing import recorded_runs

    result = ltrun("--epochs", "1", "--set", "optim.name=adamw", "--set", "optim.lr=0.001", *FAST)
    assert result.exit_code == 0, result.stderr
    (parent,) = recorded_runs(nested=False)
    assert parent.data.params["optim.name"] == "adamw" and parent.info.status == "FINISHED"


def test_a_stages_views_end_their_dataloader_workers_when_closed():
    """The engine closes a stage's views when the stage ends: the DataLoader's persistent
    workers end then, not whenever the garbage collector gets to them."""
    from ltcore.testing import assemble_run

    run = assemble_run(["ce"], "views.workers=1", "views.backend=reference")
    stage = run.main_stage
    views = run.task.views(run, stage, ("sample",))
    order = torch.arange(32).unsqueeze(1)
    assert len(list(views.epoch(order, ("sample",), 16, seed=0))) == 2
    workers = list(views.loader._iterator._workers)
    assert workers and all(w.is_alive() for w in workers)
    views.close()
    assert views.loader._iterator is None and not any(w.is_alive() for w in workers)
    views.close()  # twice is harmless
