"""Text tokenizers a CLIP text tower reads, each with a JSON `spec` a checkpoint card records to rebuild it.

`ChineseTokenizer` is Chinese-CLIP's: BERT WordPiece (lower-cased, every CJK ideograph a token) over the 21,128-entry
vocabulary shipped with `cn_clip`, run by cn_clip's own `FullTokenizer` so ids match Chinese-CLIP exactly. A row is
``[CLS] tokens [SEP]`` padded with ``[PAD]`` (id 0) to `context_length`; a long caption loses tokens, never its
``[SEP]``, because the text tower pools at ``[SEP]``.

The spec names a vocabulary by its sha256, not by its path: a card written on one machine must rebuild the same ids on
another, and a different vocabulary under the same file name must be refused, not silently used. Checkpoints keep a
copy of the vocabulary beside the weights (see `lib/checkpoints.py`); `tokenizer_from_spec` looks there first.

open_clip's own tokenizers (BPE for English CLIPs) are described by ``{"kind": "open_clip", ...}`` so that every card
says which tokenizer its model needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from danqing_assets.lib.text import default_vocab_path

BERT_KIND = "bert_wordpiece"
OPEN_CLIP_KIND = "open_clip"

CN_CLIP_VOCAB_SIZE = 21128
"""Entries of cn_clip's vocab.txt; with the ids below, what the project's Chinese text towers are built for."""
CN_CLIP_PAD_ID, CN_CLIP_CLS_ID, CN_CLIP_SEP_ID = 0, 101, 102


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ChineseTokenizer:
    """Chinese-CLIP's BERT WordPiece tokenizer: ``tok(texts) -> LongTensor (n, context_length)``.

    Identical ids to ``cn_clip.clip.tokenize(texts, context_length)``: ``[CLS]``, the first ``context_length - 2``
    WordPiece ids, ``[SEP]``, then ``[PAD]`` zeros.
    """

    kind = BERT_KIND

    def __init__(self, vocab_path: str | Path | None = None, context_length: int = 64) -> None:
        if context_length < 3:
            raise ValueError(f"context_length must leave room for [CLS], a token and [SEP]; got {context_length}")
        try:
            from cn_clip.clip.bert_tokenizer import FullTokenizer
        except ImportError as err:  # pragma: no cover - the project installs cn_clip (--no-deps) for this
            raise ImportError(
                f"ChineseTokenizer runs cn_clip's BERT tokenizer, which cannot be imported ({err}); install it with "
                "`pip install --no-deps cn-clip` (it needs `six`)"
            ) from err

        self.vocab_path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
        self.context_length = int(context_length)
        self._tok = FullTokenizer(vocab_file=str(self.vocab_path), do_lower_case=True)
        vocab = self._tok.vocab
        missing = [t for t in ("[PAD]", "[CLS]", "[SEP]", "[UNK]") if t not in vocab]
        if missing:
            raise ValueError(f"{self.vocab_path} is not a BERT vocabulary: no {', '.join(missing)}")
        self.pad_id, self.cls_id, self.sep_id, self.unk_id = (vocab[t] for t in ("[PAD]", "[CLS]", "[SEP]", "[UNK]"))
        self.vocab_sha256 = file_sha256(self.vocab_path)

    @property
    def vocab_size(self) -> int:
        return len(self._tok.vocab)

    @property
    def eos_id(self) -> int:
        """The id the text tower pools at (``[SEP]``)."""
        return self.sep_id

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of `text`, without special tokens and untruncated."""
        return self._tok.tokenize(text)

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, without special tokens and untruncated."""
        return self._tok.convert_tokens_to_ids(self._tok.tokenize(text))

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> Any:
        import torch

        if isinstance(texts, str):
            texts = [texts]
        n_ctx = int(context_length or self.context_length)
        out = torch.full((len(texts), n_ctx), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.cls_id, *self.encode(text)[: n_ctx - 2], self.sep_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def count_truncated(self, texts: Iterable[str]) -> int:
        """How many of `texts` lose tokens at `context_length` (asset metadata: is the context long enough?)."""
        keep = self.context_length - 2
        return sum(len(self._tok.tokenize(t)) > keep for t in texts)

    def spec(self) -> dict[str, Any]:
        """What a checkpoint card records: enough to rebuild identical ids elsewhere (`tokenizer_from_spec`)."""
        return {
            "kind": BERT_KIND,
            "vocab_sha256": self.vocab_sha256,
            "vocab_size": self.vocab_size,
            "context_length": self.context_length,
            "do_lower_case": True,
            "pad_id": self.pad_id,
            "cls_id": self.cls_id,
            "sep_id": self.sep_id,
        }

    def __repr__(self) -> str:
        return f"ChineseTokenizer({str(self.vocab_path)!r}, context_length={self.context_length})"


def open_clip_tokenizer_spec(model_name: str, context_length: int | None = None) -> dict[str, Any]:
    """The spec of open_clip's tokenizer for `model_name` (its context length by default)."""
    if context_length is None:
        import open_clip

        cfg = open_clip.get_model_config(model_name) or {}
        context_length = int(cfg.get("text_cfg", {}).get("context_length", 77))
    return {"kind": OPEN_CLIP_KIND, "model_name": model_name, "context_length": int(context_length)}


def tokenizer_from_spec(
    spec: dict[str, Any], *, vocab_path: str | Path | None = None, search_dirs: Sequence[str | Path] = ()
) -> Any:
    """Rebuild the tokenizer a card describes.

    BERT kind: the first vocabulary whose sha256 matches, among `vocab_path`, ``<dir>/vocab.txt`` for each of
    `search_dirs` (a checkpoint directory), and cn_clip's own; none matching is a ValueError (never a silent swap).
    open_clip kind: ``open_clip.get_tokenizer(model_name, context_length)``.
    """
    kind = spec.get("kind")
    if kind == BERT_KIND:
        want = spec.get("vocab_sha256")
        if not want:
            raise ValueError(f"tokenizer spec without vocab_sha256: {spec}")
        candidates: list[Path] = []
        if vocab_path is not None:
            candidates.append(Path(vocab_path))
        candidates += [Path(d) / "vocab.txt" for d in search_dirs]
        try:
            candidates.append(default_vocab_path())
        except FileNotFoundError:
            pass
        tried = []
        for path in candidates:
            if not path.is_file():
                continue
            digest = file_sha256(path)
            if digest == want:
                if not spec.get("do_lower_case", True):
                    raise ValueError("tokenizer spec asks for a cased BERT tokenizer; only lower-cased is supported")
                return ChineseTokenizer(path, context_length=int(spec["context_length"]))
            tried.append(f"{path} ({digest[:12]})")
        raise ValueError(
            f"no vocabulary with sha256 {want[:12]}... for this tokenizer spec; tried {tried or 'nothing'}: "
            "pass vocab_path= to the file the checkpoint was trained with"
        )
    if kind == OPEN_CLIP_KIND:
        import open_clip

        return open_clip.get_tokenizer(spec["model_name"], context_length=spec.get("context_length"))
    raise ValueError(f"unknown tokenizer kind {kind!r} (known: {BERT_KIND}, {OPEN_CLIP_KIND})")


def tokenizer_spec(tokenizer: Any, model_name: str | None = None) -> dict[str, Any]:
    """The spec of `tokenizer`: its own `spec()`, else open_clip's tokenizer for `model_name`."""
    if hasattr(tokenizer, "spec"):
        return tokenizer.spec()
    if model_name is None:
        raise ValueError(f"cannot describe tokenizer {tokenizer!r}: it has no spec() and no model_name was given")
    return open_clip_tokenizer_spec(model_name, getattr(tokenizer, "context_length", None))


def count_truncated(tokenizer: Any, texts: Sequence[str]) -> int:
    """Texts that `tokenizer` truncates; 0 when it cannot tell (a tokenizer without `count_truncated` or `encode`).

    open_clip's BPE `SimpleTokenizer` is asked through its `encode` (``<sot> ids <eot>`` must fit).
    """
    if hasattr(tokenizer, "count_truncated"):
        return int(tokenizer.count_truncated(texts))
    n_ctx = getattr(tokenizer, "context_length", None)
    encode = getattr(tokenizer, "encode", None)
    if not n_ctx or encode is None or getattr(tokenizer, "reduction_fn", None) is not None:
        return 0
    return sum(len(encode(t)) + 2 > n_ctx for t in texts)
