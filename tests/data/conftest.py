"""A tiny byte-level BPE tokenizer with a ChatML template, trained in the test: no model download needed."""

import pytest
import tokenizers

from bitune_jax.tokenizer import Tokenizer

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>", "<s>", "<pad>"]
CORPUS = [
    "Question: What is two plus three?\n\nAnswer: Five.",
    "Mia has 12 stickers. Mia buys 7 more stickers. How many stickers does Mia have at the end?",
    "<think>\nStep 1: Mia gets 7 more stickers, so 12 + 7 = 19.\n</think>\n\nThe answer is \\boxed{19}.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
] * 4


def _backend() -> tokenizers.Tokenizer:
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(CORPUS, trainer)
    return backend


@pytest.fixture(scope="session")
def backend() -> tokenizers.Tokenizer:
    return _backend()


@pytest.fixture()
def tok(backend) -> Tokenizer:
    """ChatML, no BOS (like SmolLM2): EOS and pad are `<|im_end|>` / `<pad>`."""
    return Tokenizer(
        backend=backend, eos_ids=(2,), pad_id=4, chat_template=CHATML, special_tokens={"eos_token": "<|im_end|>"}
    )


@pytest.fixture()
def tok_bos(backend) -> Tokenizer:
    """A tokenizer that prepends BOS to plain text (like Gemma), for the plain template."""
    return Tokenizer(backend=backend, bos_id=3, eos_ids=(2,), pad_id=4, add_bos=True, chat_template=CHATML)
