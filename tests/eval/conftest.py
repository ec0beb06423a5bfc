"""SmolLM2-135M-Instruct, loaded once for the whole folder (only the tests that need a real model ask for it)."""

import pytest

import bitune_jax as bj


@pytest.fixture(scope="package")
def lm():
    return bj.load("smollm2-135m-instruct")
