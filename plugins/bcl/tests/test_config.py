"""Configuration layering with bcl's options and presets."""

import pytest

from ltcore import ConfigError, Plugins, resolve


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def test_later_sources_win(plugins, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('epochs = 7\n[optim]\nlr = 0.3\n[bcl]\ntemperature = 0.2\n')
    settings = resolve(plugins, ["bcl"], ["cifar10-lt"], str(config),
                       ["optim.lr=0.4"], {"batch_size": 32})
    assert settings.run.epochs == 7              # file over preset (200)
    assert settings.run.optim.lr == 0.4          # --set over file
    assert settings.run.batch_size == 32         # CLI option over preset (256)
    assert settings.run.dataset == "cifar10-lt"  # from the preset
    assert settings.plugins["bcl"].temperature == 0.2
    assert settings.run.views.classifier == "autoaugment-cutout"  # bcl's default preset


def test_options_of_unselected_plugin_are_refused(plugins):
    with pytest.raises(ConfigError, match="--plugin bcl"):
        resolve(plugins, ["ce"], assignments=["bcl.temperature=0.2"])


def test_unknown_preset_lists_presets(plugins):
    with pytest.raises(ConfigError, match="cifar10-lt"):
        resolve(plugins, ["bcl"], ["nope"])
