"""Run an experiment from a config file:

    python -m experiments.run --config=experiments/configs/smollm2_rep.py [--config.train.epochs=64 ...]

The config file's `get_config()` returns an ml_collections `ConfigDict`; it is locked before the overrides, so an
unknown key is an error that names it.
"""

import json

from absl import app, logging
from ml_collections import config_flags

from bitune_jax.train.loop import run

_CONFIG = config_flags.DEFINE_config_file("config", None, "path to an experiment config file", lock_config=True)


def main(argv):
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    summary = run(_CONFIG.value)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))


if __name__ == "__main__":
    app.run(main)
