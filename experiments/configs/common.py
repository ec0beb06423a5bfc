"""Every key a run config has, with its default: `base()`, built from the typed specs in `bitune_jax.train.spec`
(each key's default, allowed values and meaning are declared there; docs/configuration.md lists them).

The returned `ConfigDict` is locked: a key that is not there is an error, in a config file as on the command line
(`--config.train.epochs=64`). `bitune_jax.train.validate` then checks every value before the model loads.
"""

from bitune_jax.train.spec import base

__all__ = ["base"]
