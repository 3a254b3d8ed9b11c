"""``ltrun --plugin cogloat`` end to end: both stages, one nested MLflow run each."""

from ltcore.testing import FAST, mlflow_client


def test_cogloat_runs_pretraining_and_classifier_stages(ltrun, check_two_stage_run, two_stages):
    result = ltrun("--plugin", "cogloat", *two_stages, *FAST)
    assert result.exit_code == 0, result.stderr
    train, _ = check_two_stage_run(mlflow_client(), ["cogloat"])
    assert train.data.params["stage.losses"] == "1*cogloat, 0*pretrain-ce"
    assert train.data.params["stage.views"] == ("con0=simaugment, key=simaugment, pos1=simaugment, "
                                                "pos2=simaugment, pos3=simaugment")
