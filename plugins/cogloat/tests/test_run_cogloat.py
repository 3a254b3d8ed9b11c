"""``ltrun --plugin cogloat`` end to end: both stages, one nested MLflow run each."""

from ltcore.testing import FAST, mlflow_client


def test_cogloat_runs_pretraining_and_classifier_stages(ltrun, check_two_stage_run, two_stages):
    result = ltrun("--plugin", "cogloat", *two_stages, *FAST)
    assert result.exit_code == 0, result.stderr
    client = mlflow_client()
    train, classifier = check_two_stage_run(client, ["cogloat"])
    assert train.data.params["stage.losses"] == "1*cogloat, 0*pretrain-ce"
    # digits-lt's declared contrastive view (standard) for every contrastive branch
    assert train.data.params["stage.views"] == ("con0=standard, key=standard, pos1=standard, "
                                                "pos2=standard, pos3=standard")
    # each class's temperature reaches MLflow per pre-training epoch (eq. 8, gamma 0.1)
    temperatures = {k: v for k, v in train.data.metrics.items() if k.startswith("temperature/")}
    assert sorted(temperatures) == [f"temperature/class-{c}" for c in range(10)]
    assert max(temperatures.values()) == 1.0 and min(temperatures.values()) >= 0.1
    history = client.get_metric_history(train.info.run_id, "temperature/class-0")
    assert [m.step for m in history] == [0]
    assert not any(k.startswith("temperature/") for k in classifier.data.metrics)
