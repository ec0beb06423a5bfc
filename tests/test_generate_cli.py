"""`python -m bitune_jax.generate`: bad sampling flags are refused by name before the model loads."""

import pytest

import bitune_jax
from bitune_jax import generate


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_new_tokens", "0"], "--max_new_tokens (0) and --slots (8) must be >= 1"),
        (["--max_new_tokens", "-3"], "--max_new_tokens (-3)"),
        (["--slots", "0"], "--slots (0) must be >= 1"),
        (["--temperature", "nan"], "temperature must be a finite number >= 0, got nan"),
        (["--top_p", "0"], "top_p must be in (0, 1]"),
        (["--top_k", "-1"], "top_k must be >= 0"),
    ],
)
def test_bad_flags_are_refused_before_the_model_loads(monkeypatch, capsys, flags, message):
    monkeypatch.setattr(bitune_jax, "load", lambda *a, **k: pytest.fail("the model loaded before the check"))
    with pytest.raises(SystemExit) as e:
        generate.main(["--prompt", "hi", *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err
