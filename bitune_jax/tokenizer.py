"""One tokenizer interface over Hugging Face `tokenizer.json`, SentencePiece `.model` and GGUF vocabularies."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import sentencepiece
import tokenizers


@dataclasses.dataclass
class Tokenizer:
    """Text <-> ids, plus what chat rendering and generation need (special ids, chat template)."""

    backend: tokenizers.Tokenizer | sentencepiece.SentencePieceProcessor
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    pad_id: int | None = None
    add_bos: bool = False  # prepend BOS when encoding plain text (not chat-rendered text)
    chat_template: str | None = None
    special_tokens: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. {"bos_token": "<s>"}

    @property
    def vocab_size(self) -> int:
        if isinstance(self.backend, tokenizers.Tokenizer):
            return self.backend.get_vocab_size(with_added_tokens=True)
        return self.backend.get_piece_size()

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Ids of `text`. Special-token strings in `text` (e.g. `<|im_start|>`) become their ids."""
        if isinstance(self.backend, tokenizers.Tokenizer):
            ids = self.backend.encode(text, add_special_tokens=False).ids
        else:
            ids = self.backend.encode(text)
        add = self.add_bos if add_bos is None else add_bos
        if add and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id, *ids]
        return list(ids)

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        ids = [int(i) for i in ids]
        if isinstance(self.backend, tokenizers.Tokenizer):
            return self.backend.decode(ids, skip_special_tokens=skip_special)
        if skip_special:
            ids = [i for i in ids if not self.backend.is_control(i)]
        return self.backend.decode(ids)

    def save_hf(self, directory: str | pathlib.Path) -> None:
        """Write `tokenizer.json` (or `tokenizer.model`) and `tokenizer_config.json`, as Hugging Face lays them out."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if isinstance(self.backend, tokenizers.Tokenizer):
            self.backend.save(str(directory / "tokenizer.json"))
        else:
            (directory / "tokenizer.model").write_bytes(self.backend.serialized_model_proto())
        config = {**self.special_tokens, "add_bos_token": self.add_bos, "tokenizer_class": "PreTrainedTokenizerFast"}
        if self.eos_ids and "eos_token" not in config:
            config["eos_token"] = self.decode([self.eos_ids[0]], skip_special=False)
        if self.chat_template:
            config["chat_template"] = self.chat_template
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))

    def control_strings(self) -> tuple[str, ...]:
        """The special tokens' texts that `encode` turns into their ids wherever they occur (`<|im_end|>`, `<s>`):
        in a data row they make turn boundaries or an EOS inside an answer. SentencePiece reads them as text."""
        if not isinstance(self.backend, tokenizers.Tokenizer):
            return ()
        added = self.backend.get_added_tokens_decoder().values()
        return tuple(sorted({t.content for t in added if t.special and t.content}))

    def token_id(self, token: str) -> int | None:
        if isinstance(self.backend, tokenizers.Tokenizer):
            return self.backend.token_to_id(token)
        i = self.backend.piece_to_id(token)
        return None if i == self.backend.unk_id() and token != self.backend.id_to_piece(i) else i


def _special_content(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def _read(path: pathlib.Path, load: Callable[[pathlib.Path], Any]) -> Any:
    """`load(path)`, with the file named in its errors (the tokenizer libraries name none)."""
    try:
        return load(path)
    except Exception as e:
        raise ValueError(f"{path}: cannot be read as a tokenizer file ({type(e).__name__}: {e})") from e


def load_hf_tokenizer(directory: str | pathlib.Path) -> Tokenizer:
    """From a Hugging Face directory: `tokenizer.json` (or `tokenizer.model`) plus `tokenizer_config.json`."""
    directory = pathlib.Path(directory)
    tok_json, sp_model = directory / "tokenizer.json", directory / "tokenizer.model"
    if tok_json.exists():
        backend = _read(tok_json, lambda f: tokenizers.Tokenizer.from_file(str(f)))
    elif sp_model.exists():
        backend = _read(sp_model, lambda f: sentencepiece.SentencePieceProcessor(model_file=str(f)))
    else:
        raise FileNotFoundError(f"{directory}: no tokenizer.json or tokenizer.model")
    config_file = directory / "tokenizer_config.json"
    config = _read(config_file, lambda f: json.loads(f.read_text())) if config_file.exists() else {}
    if not isinstance(config, dict):
        raise ValueError(f"{config_file}: holds a {type(config).__name__}, not a JSON object")
    template = config.get("chat_template")
    template_file = directory / "chat_template.jinja"
    if template is None and template_file.exists():
        template = template_file.read_text()
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
    specials = {k: _special_content(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    specials = {k: v for k, v in specials.items() if v}
    tok = Tokenizer(
        backend=backend,
        chat_template=template,
        special_tokens=specials,
        add_bos=bool(config.get("add_bos_token", False)),
    )
    vocabulary = tok_json if tok_json.exists() else sp_model
    for key in ("bos_token", "eos_token", "pad_token"):
        if key in specials and tok.token_id(specials[key]) is None:
            raise ValueError(f"{config_file}: {key}={specials[key]!r} is not a token of {vocabulary}")
    tok.bos_id = tok.token_id(specials["bos_token"]) if "bos_token" in specials else None
    tok.eos_ids = (tok.token_id(specials["eos_token"]),) if "eos_token" in specials else ()
    tok.pad_id = tok.token_id(specials["pad_token"]) if "pad_token" in specials else None
    if isinstance(backend, sentencepiece.SentencePieceProcessor) and "add_bos_token" not in config:
        tok.add_bos = tok.bos_id is not None
    return tok


def load_sentencepiece(model_file: str | pathlib.Path, chat_template: str | None = None) -> Tokenizer:
    path = pathlib.Path(model_file)
    if not path.exists():
        raise FileNotFoundError(f"{path}: SentencePiece model not found")
    sp = _read(path, lambda f: sentencepiece.SentencePieceProcessor(model_file=str(f)))
    bos = sp.bos_id() if sp.bos_id() >= 0 else None
    eos = (sp.eos_id(),) if sp.eos_id() >= 0 else ()
    pad = sp.pad_id() if sp.pad_id() >= 0 else None
    specials = {}
    if bos is not None:
        specials["bos_token"] = sp.id_to_piece(bos)
    if eos:
        specials["eos_token"] = sp.id_to_piece(eos[0])
    return Tokenizer(
        backend=sp,
        bos_id=bos,
        eos_ids=eos,
        pad_id=pad,
        add_bos=bos is not None,
        chat_template=chat_template,
        special_tokens=specials,
    )
