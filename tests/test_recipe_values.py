"""Every recipe in configs/ resolves to the values recorded in tests/recipe_values.json: each
recipe's (and each of its arguments') settings that differ from config_schema's defaults. A
refactor of configs/ must leave the file unchanged; a deliberate change of a recipe's value
rewrites it with

    python tests/test_recipe_values.py --write

and the file's diff shows the values that changed."""
import json
import os
import sys

import ml_collections
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `configs` as a package, as launch.py finds it from the repository root

from effssl_jax import config_schema  # noqa: E402

RECORD = os.path.join(ROOT, "tests", "recipe_values.json")


def recipes() -> list[str]:
    """Every configs/*.py, with each argument its docstring names."""
    from configs import ablation, imagenette_table9
    names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                   if f.endswith(".py") and f not in ("__init__.py", "common.py"))
    args = {name: [None] for name in names}
    args["quickstart"] += [n for n in names if n.endswith(("_baseline", "_f1clr"))]
    args["ablation"] = args["imagenette_vit"] = list(ablation.ROWS)
    args["imagenette_ablation"] = list(ablation.ROWS) + ["ca,20,cifar16", "f1clr+sp+ha,20,cifar16"]
    args["imagenette_table9"] = [*imagenette_table9.ROWS, "base,7"]
    args["lightly_imagenette"] = ["cosine", "efficient", "efficient,100"]
    args["lr_range_test"] = [None, "byol", "dino"]
    return [f"{n}.py" + (f":{a}" if a else "") for n in names for a in args[n]]


def _flat(config, prefix="") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = json.loads(json.dumps(value))  # tuples as lists, as JSON holds them
    return out


def set_values(recipe: str) -> dict:
    """The recipe's resolved values that differ from the schema's defaults."""
    defaults = _flat(config_schema.default_config())
    config = _flat(config_schema.from_recipe(os.path.join(ROOT, "configs", recipe)))
    assert set(config) == set(defaults), f"{recipe} adds keys: {set(config) - set(defaults)}"
    return {k: v for k, v in config.items() if v != defaults[k]}


def _recorded() -> dict:
    with open(RECORD) as f:
        return json.load(f)


def test_every_recipe_is_recorded():
    assert sorted(_recorded()) == sorted(recipes())


@pytest.mark.parametrize("recipe", recipes())
def test_recipe_resolves_to_its_recorded_values(recipe):
    assert set_values(recipe) == _recorded()[recipe]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    with open(RECORD, "w") as f:
        json.dump({r: set_values(r) for r in recipes()}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {RECORD}")
