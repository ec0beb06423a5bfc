"""A GGUF file's vocabulary -> a Hugging Face `tokenizers` tokenizer that encodes as the model's own.

Byte-level BPE files (`gpt2`) rebuild the tokenizer from tokens, merges and the pre-tokenizer llama.cpp names
(`tokenizer.ggml.pre`); SentencePiece files (`llama`) from tokens and scores, merges recovered from the ranks."""

from __future__ import annotations

import warnings

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

from bitune_jax.checkpoints.gguf_file import GEMMA_ARCHS, GGUFFile, eos_ids, field, required_field, source
from bitune_jax.tokenizer import Tokenizer

_CONTROL, _USER_DEFINED = 3, 4
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# `tokenizer.ggml.pre` -> regex splits, as llama.cpp's llama-vocab.cpp applies them before byte-level BPE
_PRE_SPLITS = {
    "smollm": [r"\p{N}", _GPT2_SPLIT],
    "starcoder": [r"\p{N}", _GPT2_SPLIT],
    "refact": [r"\p{N}", _GPT2_SPLIT],
    "llama-bpe": [_LLAMA3_SPLIT],
    "llama3": [_LLAMA3_SPLIT],
    "llama-v3": [_LLAMA3_SPLIT],
    "qwen2": [_QWEN2_SPLIT],
    "deepseek-r1-qwen": [_QWEN2_SPLIT],
    "gpt2": [_GPT2_SPLIT],
    "default": [_GPT2_SPLIT],
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _byte_level_bpe(tokens: list[str], merges: list[str], pre: str | None) -> tuple[tokenizers.Tokenizer, set[str]]:
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i for i, t in enumerate(tokens)
    }
    bpe = models.BPE(
        vocab=vocab,
        merges=[tuple(m.split(" ")) for m in merges],
        dropout=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
    )
    tok = tokenizers.Tokenizer(bpe)
    if pre not in _PRE_SPLITS:
        warnings.warn(f"GGUF pre-tokenizer {pre!r} not known; splitting text like GPT-2", stacklevel=3)
    splits = _PRE_SPLITS.get(pre, [_GPT2_SPLIT])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(s), behavior="isolated") for s in splits]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok, alphabet


def _merges_from_vocab(tokens: list[str], rank: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges a SentencePiece vocabulary implies: every split of a token into two tokens, best rank first
    (transformers' `generate_merges` with scores)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for merged, score in rank.items():
        local = [
            (merged[:k], merged[k:], score)
            for k in range(1, len(merged))
            if merged[:k] in vocab and merged[k:] in vocab
        ]
        merges.extend(sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _sentencepiece_bpe(reader: GGUFFile, tokens: list[str], arch: str) -> tokenizers.Tokenizer:
    unk = field(reader, "tokenizer.ggml.unknown_token_id")
    unk_token = tokens[unk] if unk is not None else None
    if arch in GEMMA_ARCHS:
        # Gemma files spell runs of 2+ spaces with real spaces; its normalizer turns spaces into "▁" first.
        # Its scores do not follow the merge order; the order of the vocabulary does.
        tokens = ["▁" * len(t) if " " in t and not t.strip() else t for t in tokens]
        rank = {t: -float(i) for i, t in enumerate(tokens)}
    else:
        rank = dict(zip(tokens, map(float, required_field(reader, "tokenizer.ggml.scores")), strict=True))
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = tokenizers.Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=_merges_from_vocab(tokens, rank),
            fuse_unk=True,
            unk_token=unk_token,
            dropout=None,
            byte_fallback=True,
        )
    )
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if arch in GEMMA_ARCHS:
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    else:
        prefix = bool(field(reader, "tokenizer.ggml.add_space_prefix", True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first" if prefix else "never", split=False
        )
        if prefix:
            decode.append(decoders.Strip(content=" ", left=1))
    tok.decoder = decoders.Sequence(decode)
    return tok


def tokenizer_from_gguf(reader: GGUFFile) -> Tokenizer:
    """The file's vocabulary as a `Tokenizer` (mirrors transformers' GGUF tokenizer converter)."""
    where = source(reader)
    kind = field(reader, "tokenizer.ggml.model")
    tokens = field(reader, "tokenizer.ggml.tokens")
    if kind is None or tokens is None:
        raise ValueError(f"{where}: no tokenizer in the GGUF metadata (tokenizer.ggml.model / tokens)")
    types = field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    arch = field(reader, "general.architecture")
    alphabet = None
    if kind == "gpt2":
        backend, alphabet = _byte_level_bpe(
            tokens, required_field(reader, "tokenizer.ggml.merges"), field(reader, "tokenizer.ggml.pre")
        )
    elif kind == "llama":
        backend = _sentencepiece_bpe(reader, tokens, arch)
    else:
        raise ValueError(f"{where}: unsupported tokenizer.ggml.model {kind!r} (supported: gpt2, llama)")
    # Control tokens (<|im_start|>, <bos>) match whole and are special; user-defined ones match whole, not special.
    # A byte-level "control" token spelled outside the byte alphabet is a llama.cpp mislabel: skipped.
    typed = list(zip(tokens, types, strict=True))
    backend.add_special_tokens(
        [
            AddedToken(t, normalized=False, special=True)
            for t, k in typed
            if k == _CONTROL and (alphabet is None or set(t) <= alphabet)
        ]
    )
    vocab = backend.get_vocab()
    backend.add_tokens(
        [AddedToken(t, normalized=False, special=False) for t, k in typed if k == _USER_DEFINED and t in vocab]
    )

    def token(key: str) -> tuple[int | None, str | None]:
        i = field(reader, f"tokenizer.ggml.{key}")
        return (None, None) if i is None or not 0 <= i < len(tokens) else (int(i), tokens[i])

    bos, eos, pad, unk = (
        token("bos_token_id"),
        token("eos_token_id"),
        token("padding_token_id"),
        token("unknown_token_id"),
    )
    specials = {
        k: v[1]
        for k, v in (("bos_token", bos), ("eos_token", eos), ("pad_token", pad), ("unk_token", unk))
        if v[1] is not None
    }
    return Tokenizer(
        backend=backend,
        bos_id=bos[0],
        eos_ids=eos_ids(reader),
        pad_id=pad[0],
        add_bos=bool(field(reader, "tokenizer.ggml.add_bos_token", kind == "llama")),
        chat_template=field(reader, "tokenizer.chat_template"),
        special_tokens=specials,
    )
