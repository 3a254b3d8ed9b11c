"""ICCL records its class centroids with the run (figure ``centroids``, for Fig. 3's t-SNE)."""

import json

import pytest
import torch

import ltcore
from ltcore.testing import FAST, mlflow_client, recorded_runs, run_folder


def test_run_end_records_the_centroids(make_run, monkeypatch):
    calls = []
    monkeypatch.setattr(ltcore, "record_figure", lambda *args: calls.append(args), raising=False)
    run = make_run(["iccl"], "iccl.classifier_epochs=0")
    state = run.plugin_object("iccl")
    dim = run.config.model.projection_dim
    embeddings = torch.nn.functional.normalize(torch.randn(6, dim), dim=1)
    state.provider.update(embeddings, torch.tensor([0, 0, 1, 3, 3, 3]))
    run.hooks.run_end(run=run)
    ((recorded_run, name, data),) = [c for c in calls if c[1] == "centroids"]
    assert recorded_run is run and set(data) == {"centroids", "seen"}
    assert torch.equal(data["centroids"], state.provider.centroids.float())
    assert data["centroids"].shape == (run.dataset.num_classes, dim)
    assert data["seen"].tolist() == [i in (0, 1, 3) for i in range(run.dataset.num_classes)]


def test_a_core_without_record_figure_records_nothing(make_run, monkeypatch):
    monkeypatch.delattr(ltcore, "record_figure", raising=False)
    monkeypatch.setattr(ltcore, "_EXPORTS",
                        {k: v for k, v in ltcore._EXPORTS.items() if k != "record_figure"})
    assert not hasattr(ltcore, "record_figure")
    run = make_run(["iccl"], "iccl.classifier_epochs=0")
    assert run.plugin_object("iccl").run_end(run) is None


@pytest.mark.skipif(not hasattr(ltcore, "record_figure") and "record_figure" not in dir(ltcore),
                    reason="this ltcore does not record figures")
def test_a_trained_run_holds_its_final_centroids(ltrun):
    # about 4 s: one end-to-end run, to read the recorded figure back against the checkpoint
    result = ltrun("--plugin", "iccl", "--epochs", "1", "--set", "iccl.warmup_epochs=0",
                   "--set", "iccl.classifier_epochs=0", *FAST)
    assert result.exit_code == 0, result.stderr
    client = mlflow_client()
    (parent,) = recorded_runs(client, nested=False)
    folder = run_folder("runs", parent.info.run_id)
    data = json.loads((folder / "figures" / "centroids.json").read_text())
    listed = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/centroids.json" in listed
    saved = torch.load(folder / "checkpoint.pt", weights_only=False)["modules"]
    centroids = saved["iccl_centroids.centroids"].float()
    torch.testing.assert_close(torch.tensor(data["centroids"]), centroids, rtol=0, atol=0)
    seen = torch.tensor(data["seen"])
    assert torch.equal(seen, saved["iccl_centroids.initialized"]) and bool(seen.any())
    torch.testing.assert_close(centroids[seen].norm(dim=1), torch.ones(int(seen.sum())))
