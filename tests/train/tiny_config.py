"""Config for the loop tests' subprocess runs (the model path and workdir come from the command line)."""

from tests.train.tiny_run import tiny_config


def get_config():
    return tiny_config("", "")
