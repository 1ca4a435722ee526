"""Chinese-CLIP's BERT tokenizer: ids equal cn_clip's own `tokenize`, truncation keeps [SEP], specs rebuild it."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from danqing_assets.lib.text import default_vocab_path
from danqing_assets.lib.tokenizer import (
    CN_CLIP_CLS_ID,
    CN_CLIP_PAD_ID,
    CN_CLIP_SEP_ID,
    CN_CLIP_VOCAB_SIZE,
    ChineseTokenizer,
    count_truncated,
    open_clip_tokenizer_spec,
    tokenizer_from_spec,
    tokenizer_spec,
)

TEXTS = [
    "一只橘猫趴在窗台上晒太阳",
    "2024年北京马拉松 Beijing Marathon！",
    "iPhone 15 Pro Max 钛金属 256GB",
    "𠀀生僻字与 emoji 😀 和全角，标点。",
    "",
    "  \t 多余的   空白 \n",
    "很长的描述" * 40,
]


@pytest.fixture(scope="module")
def tok() -> ChineseTokenizer:
    return ChineseTokenizer(context_length=52)


@pytest.mark.parametrize("n_ctx", [52, 64, 8])
def test_ids_equal_cn_clip_tokenize(n_ctx: int) -> None:
    from cn_clip.clip import tokenize

    ours = ChineseTokenizer(context_length=n_ctx)(TEXTS)
    assert ours.dtype == torch.long and ours.shape == (len(TEXTS), n_ctx)
    assert torch.equal(ours, tokenize(TEXTS, context_length=n_ctx))


def test_row_layout_and_truncation_keeps_sep(tok: ChineseTokenizer) -> None:
    assert (tok.vocab_size, tok.pad_id, tok.cls_id, tok.sep_id) == (
        CN_CLIP_VOCAB_SIZE, CN_CLIP_PAD_ID, CN_CLIP_CLS_ID, CN_CLIP_SEP_ID)
    ids = tok(["一只猫", "猫" * 100])
    short = ids[0].tolist()
    assert short[:5] == [tok.cls_id, *tok.encode("一只猫"), tok.sep_id] and set(short[5:]) == {tok.pad_id}
    long = ids[1].tolist()
    assert long[0] == tok.cls_id and long[-1] == tok.sep_id and tok.pad_id not in long
    assert long[1:-1] == [tok.encode("猫")[0]] * 50
    assert tok.tokenize("Hello，世界") == ["hello", "，", "世", "界"]  # lower-cased, CJK and punctuation split
    assert torch.equal(tok("一只猫"), ids[:1])  # a single string is a batch of one


def test_count_truncated_is_exact_at_the_boundary() -> None:
    tok = ChineseTokenizer(context_length=10)  # room for 8 tokens
    assert len(tok.encode("猫" * 8)) == 8
    assert tok.count_truncated(["猫" * 8, "猫" * 9, "", "猫" * 30]) == 2
    assert count_truncated(tok, ["猫" * 9]) == 1
    assert count_truncated(lambda texts: None, ["猫" * 900]) == 0  # a tokenizer that cannot tell
    with pytest.raises(ValueError, match="context_length"):
        ChineseTokenizer(context_length=2)


def test_spec_rebuilds_the_same_ids(tok: ChineseTokenizer) -> None:
    spec = tok.spec()
    assert spec["kind"] == "bert_wordpiece" and spec["context_length"] == 52 and len(spec["vocab_sha256"]) == 64
    again = tokenizer_from_spec(spec)
    assert isinstance(again, ChineseTokenizer) and again.context_length == 52
    assert torch.equal(again(TEXTS), tok(TEXTS))
    assert tokenizer_spec(tok) == spec


def test_spec_finds_its_vocabulary_by_hash_not_by_name(tmp_path) -> None:
    lines = default_vocab_path().read_text(encoding="utf-8").splitlines()
    lines[1000], lines[1001] = lines[1001], lines[1000]  # same file name and size, different ids
    other = tmp_path / "ckpt" / "vocab.txt"
    other.parent.mkdir()
    other.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mine = ChineseTokenizer(other, context_length=16)
    spec = mine.spec()
    assert spec["vocab_sha256"] != ChineseTokenizer().spec()["vocab_sha256"]
    with pytest.raises(ValueError, match="no vocabulary with sha256"):
        tokenizer_from_spec(spec)  # cn_clip's vocab.txt is not this one: refused, not swapped in
    found = tokenizer_from_spec(spec, search_dirs=[other.parent])
    assert found.vocab_path == other and torch.equal(found(TEXTS), mine(TEXTS))
    assert not torch.equal(found(TEXTS), ChineseTokenizer(context_length=16)(TEXTS))
    assert tokenizer_from_spec(spec, vocab_path=other).vocab_path == other


def test_open_clip_spec_kind() -> None:
    import open_clip

    spec = open_clip_tokenizer_spec("ViT-B-32")
    assert spec == {"kind": "open_clip", "model_name": "ViT-B-32", "context_length": 77}
    bpe = tokenizer_from_spec(spec)
    assert torch.equal(bpe(["a photo of a cat"]), open_clip.tokenize(["a photo of a cat"]))
    assert tokenizer_spec(bpe, "ViT-B-32") == spec
    short = tokenizer_from_spec({**spec, "context_length": 8})
    assert count_truncated(short, ["a cat", "a photo of a very fat orange cat"]) == 1  # through BPE encode
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        tokenizer_from_spec({"kind": "sentencepiece"})
