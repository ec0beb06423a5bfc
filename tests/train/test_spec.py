"""The typed run spec mirrors base() key for key, and every shipped config becomes one."""

import dataclasses
import importlib.util
import pathlib

import pytest

from bitune_jax.peft import PeftConfig
from bitune_jax.train.saturation import SaturationConfig
from bitune_jax.train.spec import RunSpec
from experiments.configs.common import base

CONFIGS = [
    p for p in sorted(pathlib.Path("experiments/configs").glob("*.py")) if p.name not in ("common.py", "__init__.py")
]


def test_spec_has_exactly_the_keys_of_base():
    config = base()
    spec = RunSpec.from_config(config)
    assert spec.to_dict() == config.to_dict()
    assert isinstance(spec.peft, PeftConfig) and isinstance(spec.saturation, SaturationConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.train.lr = 1.0


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_becomes_a_spec(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = RunSpec.from_config(module.get_config())
    assert run.to_dict() == module.get_config().to_dict()


def test_a_key_outside_base_is_named():
    values = base().to_dict()
    values["train"]["lrr"] = 1.0
    del values["train"]["lr"]
    with pytest.raises(KeyError, match=r"config.train: keys \['lrr'\] are not in the run config and \['lr'\] are"):
        RunSpec.from_config(values)


def test_every_key_declares_its_meaning_and_its_default_is_allowed():
    """The specs are the one source of the config: each of their own keys says what it does, and each default
    passes the checks declared beside it (choices of a `Literal`, a range)."""
    from bitune_jax.train.spec import choices, keys, ranges

    library = ("peft.", "saturation.")  # PeftConfig and SaturationConfig document themselves
    undocumented = [k for k, v in keys().items() if not v.doc and not k.startswith(library)]
    assert not undocumented, undocumented
    for k, allowed in choices().items():
        assert keys()[k].default in allowed, k
    for k, (lo, hi, integer) in ranges().items():
        default = keys()[k].default
        assert lo <= default and (hi is None or default <= hi) and isinstance(default, int) == integer, k
