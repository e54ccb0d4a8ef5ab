"""The named recipes shipped in the package: each loads, cites a source for every value, and
`selfsup recipes`, `pretrain --recipe` and `plan --recipe` use them."""

import pytest
import yaml

from selfsup.cli import main
from selfsup.config import ConfigError, apply_overrides
from selfsup.recipes import find_recipe, load_recipe, recipes

REQUIRED = {"seer", "seer-tiny", "dino-vit-small", "cpu"}


def test_the_recipes_the_issue_names_are_shipped_and_load():
    found = recipes()
    assert REQUIRED <= set(found)
    for name, recipe in found.items():
        config = load_recipe(name)
        assert config.recipe == f"{name}@{recipe.version}" and recipe.description
    seer = load_recipe("seer")
    assert seer.method["name"] == "swav" and seer.backbone.name == "regnety-256gf"
    assert seer.method["prototypes"] == 16000 and seer.method["sinkhorn_iterations"] == 10
    assert (seer.train.optimizer, seer.train.weight_decay, seer.train.strategy) == ("lars", 1e-5, "fsdp")
    # VISSL's LARC, where SwAV's own recipe is solo-learn's small-batch LARS.
    assert (seer.train.lars_trust, seer.train.lars_clip, seer.augment.recipe) == (0.001, False, "multicrop")
    assert seer.train.activation_checkpointing and seer.train.sync_batchnorm and seer.train.precision == "bf16"
    assert load_recipe("dino-vit-small").backbone.name == "vit-small"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_value_of_a_recipe_cites_its_source(name):
    lines = find_recipe(name).path.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            cited = "#" in line or lines[number - 1].lstrip().startswith("#")
            assert cited, f"{name}.yaml line {number + 1} has no source: {line!r}"
    assert isinstance(yaml.safe_load("\n".join(lines)), dict)


def test_unknown_recipes_and_versions_are_one_clear_error():
    with pytest.raises(ConfigError, match="recipes: .*seer"):
        find_recipe("seer-huge")
    with pytest.raises(ConfigError, match="ships version 1"):
        find_recipe("seer@7")
    assert find_recipe("seer@1").name == "seer"
    # Overrides go on top of a recipe.
    assert apply_overrides(load_recipe("seer"), ["train.batch_size=8"]).train.batch_size == 8


def test_recipes_and_plan_commands(capsys):
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in REQUIRED)
    assert main(["plan", "--recipe", "seer", "--gpus", "512", "--gpu", "v100", "--images", "1000000000", "--epochs", "1"]) == 0
    planned = capsys.readouterr().out
    assert "1,363,923,178" in planned and "days" in planned
    assert max(len(line) for line in planned.splitlines()) <= 100
    assert main(["plan", "--recipe", "seer", "--gpu", "tpu"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "tpu" in error
    assert main(["pretrain", "--recipe", "nope"]) == 2
    assert "recipe 'nope' does not exist" in capsys.readouterr().err
