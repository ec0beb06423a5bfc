"""Chat templates render with the model's own Jinja template; the prompt/answer split is exact."""

import pytest
import tokenizers

from bitune_jax.chat import encode_chat, encode_prompt_answer, render_chat
from bitune_jax.tokenizer import Tokenizer

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture()
def tok():
    words = ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "hello", "hi", "there", "\n", " "]
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>")
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"\n| "), behavior="isolated")
    backend.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return Tokenizer(backend=backend, eos_ids=(2,), chat_template=CHATML)


def test_render_matches_template(tok):
    text = render_chat(tok, [{"role": "user", "content": "hello"}])
    assert text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert encode_chat(tok, [{"role": "user", "content": "hello"}]) == [1, 3, 8, 5, 2, 8, 1, 4, 8]


def test_prompt_answer_boundary(tok):
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
    prompt, answer = encode_prompt_answer(tok, messages)
    assert prompt == encode_chat(tok, messages[:1])
    assert answer == [6, 9, 7, 2, 8]  # "hi", " ", "there", "<|im_end|>", "\n"
    assert prompt + answer == encode_chat(tok, messages, add_generation_prompt=False)


def test_errors_name_the_problem(tok):
    with pytest.raises(ValueError, match="last message has role 'assistant'"):
        encode_prompt_answer(tok, [{"role": "user", "content": "hello"}])
    with pytest.raises(ValueError, match="message 0 must be a dict"):
        render_chat(tok, [{"content": "x"}])
    with pytest.raises(ValueError, match="no chat template"):
        render_chat(Tokenizer(backend=tok.backend), [{"role": "user", "content": "x"}])
