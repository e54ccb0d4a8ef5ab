import pytest

from selfsup import config as config_module
from selfsup.config import Config, ConfigError, parse_budget
from selfsup.methods import method_class


def test_overrides_parse_types_and_nested_keys():
    config = config_module.apply_overrides(Config(), ["train.lr=0.5", "train.epochs=3", "augment.global_scale=[0.3, 1.0]", "eval.enabled=false"])
    assert config.train.lr == 0.5 and config.train.epochs == 3
    assert config.augment.global_scale == (0.3, 1.0) and config.eval.enabled is False


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=0.1", "train.lrr"),
        ("trian.lr=0.1", "trian"),
        ("train.optimizer=adam", "sgd, lars, adamw"),
        ("train.epochs=many", "train.epochs must be an integer"),
        ("train.budget=soon", "train.budget"),
        ("train.batch_size=0", "batch_size must be at least 1"),
        ("augment.global_scale=[0.2]", "list of 2"),
        ("eval.enabled=maybe", "true or false"),
        ("nonsense", "section.key=value"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        config_module.apply_overrides(Config(), [override])


def test_yaml_round_trip(tmp_path):
    config = config_module.apply_overrides(Config(), ["train.budget=15m", "method.temperature=0.2", "augment.mean=[0.5]"])
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert config_module.load(path) == config


def test_unknown_key_in_yaml_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 2\n  warmup: 1\n")
    with pytest.raises(ConfigError, match="train.warmup.*allowed in train: epochs"):
        config_module.load(path)


def test_method_options_are_checked_against_the_method():
    assert method_class("simclr").resolve_options({"name": "simclr"})["temperature"] == 0.5
    with pytest.raises(ConfigError, match="method.temprature.*allowed: projection_dim"):
        method_class("simclr").resolve_options({"name": "simclr", "temprature": 0.2})
    with pytest.raises(ConfigError, match="method.temperature must be a number"):
        method_class("simclr").resolve_options({"name": "simclr", "temperature": "hot"})
    with pytest.raises(ConfigError, match="unknown method .simclrr.; available: moco-v2, moco-v3, simclr"):
        method_class("simclrr")


def test_budget_parsing():
    assert parse_budget("15m") == 900
    assert parse_budget("90s") == 90
    assert parse_budget("1.5h") == 5400
    assert parse_budget("600") == 600
    with pytest.raises(ConfigError):
        parse_budget("0m")
