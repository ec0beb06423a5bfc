"""The tiny tokenizers trained in `tests/data/conftest.py`, shared: the tasks' records go through the data pipeline."""

from tests.data.conftest import backend, tok, tok_bos

__all__ = ["backend", "tok", "tok_bos"]
