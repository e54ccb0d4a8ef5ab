"""Named, versioned training recipes shipped with selfsup.

A recipe is a YAML file of config sections in this folder (``seer.yaml`` is the recipe
``seer``), every value followed by a comment citing its source. Its first lines are comments
of the form ``# description: ...`` and ``# version: N``. ``selfsup pretrain --recipe NAME``
starts from it, ``key=value`` overrides go on top, and the run's ``config.yaml`` records
``recipe: NAME@VERSION`` beside every value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from selfsup.config import Config, ConfigError, from_dict

RECIPE_DIR = Path(__file__).parent
_HEADER = re.compile(r"#\s*(description|version):\s*(.+)")


@dataclass(frozen=True)
class Recipe:
    name: str
    version: int
    description: str
    path: Path

    @property
    def label(self) -> str:
        """What a run's config records: ``seer@1``."""
        return f"{self.name}@{self.version}"


def recipes() -> dict[str, Recipe]:
    """Every shipped recipe by name, sorted."""
    found = {}
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        header = {}
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            match = _HEADER.fullmatch(line.strip())
            if match:
                header[match.group(1)] = match.group(2).strip()
        found[path.stem] = Recipe(path.stem, int(header.get("version", 1)), header.get("description", ""), path)
    return found


def find_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (``seer`` or ``seer@1``), or a ConfigError listing them."""
    base, _, version = name.partition("@")
    known = recipes()
    if base not in known:
        raise ConfigError(f"recipe {name!r} does not exist; recipes: {', '.join(known)} (see `selfsup recipes`)")
    recipe = known[base]
    if version and version != str(recipe.version):
        raise ConfigError(f"recipe {name!r}: this selfsup ships version {recipe.version} of {base!r} ({recipe.label})")
    return recipe


def load_recipe(name: str) -> Config:
    """The config of recipe ``name``, with ``recipe`` set to its label."""
    recipe = find_recipe(name)
    values = yaml.safe_load(recipe.path.read_text()) or {}
    values["recipe"] = recipe.label
    return from_dict(values)
