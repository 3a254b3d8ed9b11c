"""Configuration layering, validation and printing."""

import pytest

from ltcore.config import RunConfig, resolve, structure
from ltcore.config_text import parse_assignment
from ltcore.errors import ConfigError
from ltcore.plugins import Plugins


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def test_set_values_are_parsed_as_toml():
    assert parse_assignment("optim.lr=0.2") == ("optim.lr", 0.2)
    assert parse_assignment("schedule.milestones=[160, 180]") == ("schedule.milestones", [160, 180])
    assert parse_assignment("dataset=cifar10-lt") == ("dataset", "cifar10-lt")
    assert parse_assignment("model.classifier=cosine") == ("model.classifier", "cosine")


def test_unknown_key_names_key_and_allowed(plugins):
    with pytest.raises(ConfigError, match=r"'optim\.lrr'.*optim\.lr"):
        resolve(plugins, ["ce"], assignments=["optim.lrr=1"])


def test_invalid_value_names_key(plugins):
    with pytest.raises(ConfigError, match=r"optim\.lr.*> 0"):
        resolve(plugins, ["ce"], assignments=["optim.lr=-1"])
    with pytest.raises(ConfigError, match=r"epochs.*int"):
        resolve(plugins, ["ce"], assignments=["epochs=many"])
    with pytest.raises(ConfigError, match=r"la\.tau"):
        resolve(plugins, ["la"], assignments=["la.tau=-2"])


def test_print_config_round_trips(ltrun, tmp_path):
    result = ltrun("--plugin", "la", "--set", "la.tau=1.5", "--epochs", "3", "--print-config")
    assert result.exit_code == 0, result.stderr
    assert "[la]\ntau = 1.5" in result.output
    path = tmp_path / "printed.toml"
    path.write_text(result.output)
    again = resolve(Plugins(), ["la"], config_file=str(path))
    assert again.run.epochs == 3 and again.plugins["la"].tau == 1.5


def test_bad_value_cli_error_exits_non_zero(ltrun):
    result = ltrun("--set", "precision=fp8")
    assert result.exit_code == 2
    assert "precision" in result.stderr and "bf16" in result.stderr
    assert "Traceback" not in result.stderr


def test_structure_rejects_sections_as_values():
    with pytest.raises(ConfigError, match="section"):
        structure(RunConfig, {"optim": 3})


def test_later_sources_win(plugins, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('epochs = 7\n[optim]\nlr = 0.3\n["ldam-drw"]\nmax_margin = 0.3\n')
    settings = resolve(plugins, ["ldam-drw"], ["cifar10-lt"], str(config),
                       ["optim.lr=0.4"], {"batch_size": 32})
    assert settings.run.epochs == 7              # file over preset (200)
    assert settings.run.optim.lr == 0.4          # --set over file
    assert settings.run.batch_size == 32         # CLI option over preset (128)
    assert settings.run.dataset == "cifar10-lt"  # from the preset
    assert settings.plugins["ldam-drw"].max_margin == 0.3
    assert settings.run.model.classifier == "cosine"  # ldam-drw's default preset


def test_options_of_unselected_plugin_are_refused(plugins):
    with pytest.raises(ConfigError, match="--plugin la"):
        resolve(plugins, ["ce"], assignments=["la.tau=0.2"])


def test_unknown_preset_lists_presets(plugins):
    with pytest.raises(ConfigError, match="cifar10-lt"):
        resolve(plugins, ["ldam-drw"], ["nope"])


def test_interval_validator_names_the_option_and_the_interval():
    import attrs

    from ltcore import doc, interval

    @attrs.define(kw_only=True)
    class Options:
        closed: float = doc("", default=0.5, validator=interval(0, 1))
        half_open: float = doc("", default=0.5, validator=interval(0, 1, include_high=False))

    Options(closed=0.0, half_open=0.0)
    Options(closed=1.0, half_open=0.999)
    with pytest.raises(ValueError, match=r"'closed' must be in \[0, 1\], got 1.5"):
        Options(closed=1.5)
    with pytest.raises(ValueError, match=r"'half_open' must be in \[0, 1\), got 1"):
        Options(half_open=1)
    with pytest.raises(ConfigError, match=r"x\.half_open.*\[0, 1\)"):
        structure(Options, {"half_open": 1.0}, "x")
