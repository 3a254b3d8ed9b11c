"""``ltrun --plugin cogloat`` end to end: both stages, one nested MLflow run each."""

from ltcore.testing import FAST, mlflow_client


def test_cogloat_runs_pretraining_and_classifier_stages(ltrun, check_two_stage_run, two_stages):
    result = ltrun("--plugin", "cogloat", *two_stages, *FAST)
    assert result.exit_code == 0, result.stderr
    train, _ = check_two_stage_run(mlflow_client(), ["cogloat"])
    assert train.data.params["stage.losses"] == "1*cogloat, 0*pretrain-ce"
    # digits-lt's declared contrastive view (standard) for every contrastive branch
    assert train.data.params["stage.views"] == ("con0=standard, key=standard, pos1=standard, "
                                                "pos2=standard, pos3=standard")
