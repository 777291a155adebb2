"""Every field of every recipe is pinned: each config in configs/, read as
mmengine reads it (its _base_ files and the libraries' bases merged), must
equal the copy in tests/data/recipe_pins.json. A change to a recipe, or to
an inherited mmdet / mmseg base after an upgrade, fails here until the pins
are written again on purpose and the difference reviewed:

    python tests/test_recipes_pinned.py     # rewrites tests/data/recipe_pins.json
"""
import json
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / 'tests' / 'data' / 'recipe_pins.json'
RECIPES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts)


def resolved(config: str) -> dict:
    """The config as plain JSON values (tuples as lists)."""
    return json.loads(json.dumps(Config.fromfile(str(ROOT / config)).to_dict(), sort_keys=True))


def test_every_recipe_is_pinned():
    assert sorted(json.loads(PINS.read_text())) == RECIPES


@pytest.mark.parametrize('config', RECIPES)
def test_the_recipe_equals_its_pin(config):
    pinned = json.loads(PINS.read_text())[config]
    got = resolved(config)
    changed = sorted(k for k in set(pinned) | set(got) if pinned.get(k) != got.get(k))
    assert not changed, (f'{config}: fields changed since pinned: {changed}; if on purpose, '
                         f'run python tests/test_recipes_pinned.py and review the diff')


if __name__ == '__main__':
    sys.path.insert(0, str(ROOT))
    import mmvit3  # noqa: F401  (the configs import it)
    PINS.write_text(json.dumps({c: resolved(c) for c in RECIPES}, indent=1, sort_keys=True) + '\n')
    print(f'wrote {PINS}: {len(RECIPES)} recipes')
