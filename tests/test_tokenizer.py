"""Tokenizers from a Hugging Face directory (tokenizer.json or a SentencePiece .model) and their chat templates."""

import json

import pytest
import sentencepiece

from bitune_jax.chat import encode_prompt_answer
from bitune_jax.tokenizer import load_hf_tokenizer, load_sentencepiece
from tests.test_chat import CHATML

TEXT = "The quick brown fox jumps over the lazy dog. " * 40 + "Pack my box with five dozen liquor jugs. " * 40


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sp")
    (directory / "corpus.txt").write_text(TEXT.replace(". ", ".\n"))
    sentencepiece.SentencePieceTrainer.train(
        input=str(directory / "corpus.txt"),
        model_prefix=str(directory / "tokenizer"),
        vocab_size=60,
        model_type="bpe",
        bos_id=1,
        eos_id=2,
        pad_id=0,
        unk_id=3,
        minloglevel=2,
    )
    return directory / "tokenizer.model"


def test_sentencepiece_roundtrip_and_bos(sp_model):
    tok = load_sentencepiece(sp_model)
    ids = tok.encode("the lazy dog")
    assert ids[0] == tok.bos_id == 1 and tok.eos_ids == (2,)
    assert tok.decode(ids) == "the lazy dog"
    assert tok.encode("the lazy dog", add_bos=False) == ids[1:]


def test_hf_directory_with_sentencepiece_model(sp_model, tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(sp_model.read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "chat_template": CHATML})
    )
    tok = load_hf_tokenizer(tmp_path)
    assert tok.bos_id == 1 and tok.eos_ids == (2,) and tok.add_bos
    assert tok.chat_template == CHATML


def test_hf_tokenizer_json_and_prompt_answer_split(tmp_path):
    import tokenizers

    backend = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator([TEXT], trainer)
    backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": {"content": "<|im_end|>"}, "pad_token": "<|im_end|>", "chat_template": CHATML})
    )
    tok = load_hf_tokenizer(tmp_path)
    assert tok.eos_ids == (2,) and tok.pad_id == 2 and tok.bos_id is None
    assert tok.decode(tok.encode("jumps over the lazy dog")) == "jumps over the lazy dog"
    messages = [{"role": "user", "content": "quick fox?"}, {"role": "assistant", "content": "lazy dog."}]
    prompt, answer = encode_prompt_answer(tok, messages)
    assert prompt[0] == 1 and tok.decode(prompt, skip_special=False).endswith("<|im_start|>assistant\n")
    assert tok.decode(answer, skip_special=False) == "lazy dog.<|im_end|>\n"
