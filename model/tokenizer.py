"""The report tokenizer: a local BERT vocabulary, or WordPiece trained on the report corpus.

Both kinds carry BLIP's two extra special tokens: ``[ENC]`` replaces ``[CLS]`` when the text
encoder attends to the image (ITM, VQA) and ``[DEC]`` starts every report the decoder writes.
Encoding a text gives ``[CLS] … [SEP]``.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from kg.atomic import replace_directory
from kg.errors import InputError, MissingResourceError

PAD, UNK, CLS, SEP, MASK, ENC, DEC = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[ENC]", "[DEC]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK, ENC, DEC)


def train_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 8000):
    """Train a lower-casing WordPiece vocabulary on ``texts`` and save it to ``out_dir``.

    Training is deterministic for the same texts in the same order. ``out_dir`` is replaced
    atomically, so an interrupted run leaves the previous tokenizer intact.

    Args:
        texts: report texts (any iterable; read once).
        out_dir: directory for ``tokenizer.json`` and its companions.
        vocab_size: target vocabulary size, special tokens included.

    Returns:
        The trained ``PreTrainedTokenizerFast`` with :data:`SPECIAL_TOKENS` registered.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if vocab_size <= len(SPECIAL_TOKENS):
        raise InputError(f"must exceed the {len(SPECIAL_TOKENS)} special tokens; got {vocab_size}", field="vocab_size")
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise InputError("no non-empty texts to train a tokenizer on", field="texts")
    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    # The trainer numbers continuation pieces ("##e") in hash-map order and breaks ties between
    # equally frequent merges by those numbers, so two runs can learn different vocabularies
    # (huggingface/tokenizers#1794). Declaring every "##<char>" up front fixes their numbers and
    # makes training deterministic; the trained vocabulary is then rebuilt with only the real
    # special tokens.
    alphabet = sorted({c for text in texts for c in normalizer.normalize_str(text) if not c.isspace()})
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=[*SPECIAL_TOKENS, *(f"##{c}" for c in alphabet)], show_progress=False
    )
    draft = Tokenizer(models.WordPiece(unk_token=UNK))
    draft.normalizer = normalizer
    draft.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    draft.train_from_iterator(texts, trainer=trainer)

    tokenizer = Tokenizer(models.WordPiece(vocab=draft.get_vocab(), unk_token=UNK))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    cls_id, sep_id = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1", special_tokens=[(CLS, cls_id), (SEP, sep_id)]
    )
    fast = _wrap(tokenizer)
    # Any directory there is replaced (not only a tokenizer); a file is refused.
    with replace_directory(out_dir, is_replaceable=Path.is_dir, what="a directory") as tmp:
        fast.save_pretrained(tmp)
    return fast


def load_tokenizer(path: str | os.PathLike):
    """Load a tokenizer saved by :func:`train_tokenizer` or a local BERT checkout's ``vocab.txt``.

    A BERT vocabulary gains ``[ENC]`` and ``[DEC]`` (appended to the vocabulary, as in BLIP).
    Nothing is fetched from a model hub.

    Raises:
        MissingResourceError: ``path`` holds neither ``tokenizer.json`` nor ``vocab.txt``.
    """
    from transformers import BertTokenizerFast, PreTrainedTokenizerFast

    path = Path(path)
    if (path / "tokenizer.json").is_file():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    elif (path / "vocab.txt").is_file():
        tokenizer = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=_lowercase(path))
    else:
        raise MissingResourceError(
            f"no tokenizer at {path}: expected tokenizer.json (from train_tokenizer) or a BERT vocab.txt"
        )
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    tokenizer.add_special_tokens({"pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP,
                                  "mask_token": MASK, "bos_token": DEC})
    return tokenizer


def special_token_ids(tokenizer) -> dict[str, int]:
    """Ids of :data:`SPECIAL_TOKENS` keyed ``pad``, ``unk``, ``cls``, ``sep``, ``mask``, ``enc``, ``dec``."""
    ids = {}
    for token in SPECIAL_TOKENS:
        index = tokenizer.convert_tokens_to_ids(token)
        if index is None or index == tokenizer.unk_token_id and token != UNK:
            raise InputError(f"tokenizer lacks the special token {token}; load it with model.tokenizer.load_tokenizer")
        ids[token.strip("[]").lower()] = int(index)
    return ids


def _wrap(tokenizer):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK, cls_token=CLS, sep_token=SEP, mask_token=MASK,
        bos_token=DEC, additional_special_tokens=[ENC, DEC],
    )


def _lowercase(path: Path) -> bool:
    # Cased BERT checkouts say so in tokenizer_config.json; the common medical ones are uncased.
    import json

    config = path / "tokenizer_config.json"
    if config.is_file():
        try:
            return bool(json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True))
        except json.JSONDecodeError:
            return True
    return True
