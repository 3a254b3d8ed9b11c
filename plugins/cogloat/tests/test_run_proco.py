"""``ltrun --plugin cogloat --plugin proco`` end to end, and proco without a contrastive loss."""

from ltcore.testing import FAST, mlflow_client


def test_cogloat_with_proco_runs_both_stages(ltrun, check_two_stage_run, two_stages):
    result = ltrun("--plugin", "cogloat", "--plugin", "proco", *two_stages, *FAST)
    assert result.exit_code == 0, result.stderr
    train, _ = check_two_stage_run(mlflow_client(), ["cogloat", "proco"])
    assert train.data.params["stage.losses"] == "0.5*cogloat, 0*pretrain-ce, 0.5*proco"


def test_proco_alone_fails_with_a_message_naming_it(ltrun):
    result = ltrun("--plugin", "proco", "--epochs", "1", *FAST)
    assert result.exit_code == 2
    assert "'proco'" in result.stderr and "contrastive" in result.stderr
