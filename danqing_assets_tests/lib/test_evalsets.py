"""Eval-set readers and writers: Chinese-CLIP retrieval layout and image-folder zero-shot layout, on real PNG/JPEG bytes."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from danqing_assets.lib.evalsets import (
    BAD_BASE64,
    BAD_JSON,
    CN_CLIP_TEMPLATES,
    CN_CLIP_TEMPLATES_SOURCE,
    DUPLICATE_IMAGE_ID,
    DUPLICATE_TEXT_ID,
    MALFORMED_LINE,
    MISSING_IMAGE_ID,
    MISSING_IMAGE_IDS,
    MISSING_TEXT,
    MISSING_TEXT_ID,
    SKIP_REASONS,
    TEXT_UNKNOWN_IMAGE,
    UNDECODABLE_IMAGE,
    UNSUPPORTED_EXTENSION,
    EvalSetError,
    RetrievalSet,
    RetrievalText,
    ZeroShotClass,
    ZeroShotSet,
    decode_base64_image,
    format_template,
    retrieval_splits,
    write_retrieval_set,
    write_zero_shot_set,
)


def _image(seed: int, fmt: str = "PNG", size: tuple[int, int] = (40, 32)) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _read_all(rs: RetrievalSet, batch_size: int = 256) -> dict[str, bytes]:
    return {i: b for batch in rs.iter_image_batches(batch_size) for i, b in batch}


# --- retrieval ---------------------------------------------------------------------------------------------------------


def test_retrieval_round_trip_streams_batches_and_keeps_bytes(tmp_path: Path) -> None:
    images = {i: _image(i, "PNG" if i % 2 else "JPEG") for i in range(5)}
    texts = [(100, "一只猫坐在沙发上", [0]), (101, "沙发上的猫", [0]), (102, "两个人在海边散步", [1, 2]),
             (103, "红色的汽车", [3])]
    imgs_path, texts_path = write_retrieval_set(tmp_path, "valid", images, texts)
    assert imgs_path.name == "valid_imgs.tsv" and texts_path.name == "valid_texts.jsonl"
    assert retrieval_splits(tmp_path) == ["valid"]

    rs = RetrievalSet(tmp_path, "valid")
    batches = list(rs.iter_image_batches(batch_size=2))
    assert [len(b) for b in batches] == [2, 2, 1]
    got = {i: b for batch in batches for i, b in batch}
    assert got == {str(i): b for i, b in images.items()}  # ids become strings, bytes are exact
    assert rs.n_images == 5
    assert rs.read_texts(known_image_ids=got) == [
        RetrievalText("100", "一只猫坐在沙发上", ("0",)), RetrievalText("101", "沙发上的猫", ("0",)),
        RetrievalText("102", "两个人在海边散步", ("1", "2")), RetrievalText("103", "红色的汽车", ("3",)),
    ]
    assert rs.skipped.as_dict() == {}
    # Chinese-CLIP's files: URL-safe base64, UTF-8 JSON with the Chinese unescaped
    first = imgs_path.read_bytes().split(b"\n")[0]
    assert base64.urlsafe_b64decode(first.split(b"\t")[1]) == images[0]
    assert "一只猫坐在沙发上" in texts_path.read_text(encoding="utf-8")


def test_plain_and_urlsafe_base64_both_read(tmp_path: Path) -> None:
    data = _image(7)
    std = base64.b64encode(data)
    assert b"+" in std or b"/" in std  # the two alphabets really differ on these bytes
    (tmp_path / "test_imgs.tsv").write_bytes(b"1\t" + std + b"\n2\t" + base64.urlsafe_b64encode(data).rstrip(b"=")
                                             + b"\r\n")
    (tmp_path / "test_texts.jsonl").write_text('{"text_id": 1, "text": "图", "image_ids": [1, 2]}\n')
    rs = RetrievalSet(tmp_path, "test")
    assert _read_all(rs) == {"1": data, "2": data}
    assert decode_base64_image(std.decode()) == data
    with pytest.raises(ValueError):
        decode_base64_image("not base64!")


def test_malformed_lines_are_counted_by_reason_never_raised(tmp_path: Path) -> None:
    good = base64.urlsafe_b64encode(_image(1)).decode()
    other = base64.urlsafe_b64encode(_image(2, "JPEG")).decode()
    truncated = base64.urlsafe_b64encode(_image(3, "JPEG")[:200]).decode()
    (tmp_path / "test_imgs.tsv").write_text("\n".join([
        f"1\t{good}",
        f"{good}",  # no id column
        f"\t{good}",  # empty id
        "3\t@@@ not base64 @@@",
        f"4\t{base64.urlsafe_b64encode(b'plain text, not an image').decode()}",
        f"5\t{truncated}",
        f"1\t{other}",  # duplicate id: the first one wins
        "",  # blank lines are not records
        f"6\t{other}\textra",
        f"7\t{other}",
    ]) + "\n")
    (tmp_path / "test_texts.jsonl").write_text("\n".join([
        json.dumps({"text_id": 10, "text": "好的", "image_ids": [1]}, ensure_ascii=False),
        "{not json",
        "[1, 2]",
        json.dumps({"text": "没有编号", "image_ids": [1]}, ensure_ascii=False),
        json.dumps({"text_id": 11, "text": "  ", "image_ids": [1]}),
        json.dumps({"text_id": 12, "text": "没有图", "image_ids": []}, ensure_ascii=False),
        json.dumps({"text_id": 13, "text": "坏图", "image_ids": [3]}, ensure_ascii=False),  # image 3 was skipped
        json.dumps({"text_id": 14, "text": "一半", "image_ids": [7, 99]}, ensure_ascii=False),  # 99 unknown, 7 kept
        json.dumps({"text_id": 10, "text": "重复", "image_ids": [7]}, ensure_ascii=False),
        json.dumps({"text_id": 15, "text": "字符串编号", "image_ids": ["7"]}, ensure_ascii=False),
    ]) + "\n")
    rs = RetrievalSet(tmp_path, "test")
    images = _read_all(rs)
    assert sorted(images) == ["1", "7"] and images["1"] == base64.urlsafe_b64decode(good)
    texts = rs.read_texts(known_image_ids=images)
    assert [(t.text_id, t.image_ids) for t in texts] == [("10", ("1",)), ("14", ("7",)), ("15", ("7",))]
    assert rs.dropped_image_refs == 1
    assert rs.skipped.as_dict() == {
        MALFORMED_LINE: 2, MISSING_IMAGE_ID: 1, BAD_BASE64: 1, UNDECODABLE_IMAGE: 2, DUPLICATE_IMAGE_ID: 1,
        BAD_JSON: 2, MISSING_TEXT_ID: 1, MISSING_TEXT: 1, MISSING_IMAGE_IDS: 1, TEXT_UNKNOWN_IMAGE: 1,
        DUPLICATE_TEXT_ID: 1,
    }
    assert set(rs.skipped.as_dict()) <= set(SKIP_REASONS)
    where = {(reason, loc) for reason, loc, _ in rs.skipped.examples}
    assert (MALFORMED_LINE, "test_imgs.tsv:2") in where and (BAD_BASE64, "test_imgs.tsv:4") in where
    assert (TEXT_UNKNOWN_IMAGE, "test_texts.jsonl:7") in where
    detail = {loc: d for reason, loc, d in rs.skipped.examples}
    assert detail["test_imgs.tsv:6"].startswith("5: decode_error")


def test_image_batches_are_read_lazily(tmp_path: Path) -> None:
    imgs_path, _ = write_retrieval_set(tmp_path, "test", {i: _image(i) for i in range(4)}, [(1, "图", [0])])
    with open(imgs_path, "a") as fh:
        fh.write("a line at the end without a tab\n")
    rs = RetrievalSet(tmp_path, "test")
    batches = rs.iter_image_batches(batch_size=2)
    assert [i for i, _ in next(batches)] == ["0", "1"]
    assert rs.skipped.as_dict() == {} and rs.n_images == 2  # the end of the file has not been read yet
    assert sum(len(b) for b in batches) == 2
    assert rs.skipped.as_dict() == {MALFORMED_LINE: 1}


def test_missing_split_files_name_the_splits_present(tmp_path: Path) -> None:
    write_retrieval_set(tmp_path, "valid", {1: _image(0)}, [(1, "图", [1])])
    with pytest.raises(FileNotFoundError, match=r"test_imgs.tsv.*splits present: \['valid'\]"):
        RetrievalSet(tmp_path, "test")


# --- zero-shot ---------------------------------------------------------------------------------------------------------


def test_zero_shot_round_trip_with_default_cn_clip_templates(tmp_path: Path) -> None:
    classes = {"dog": "狗", "cat": "猫", "car": "汽车"}
    images = {"cat": [_image(1), _image(2, "JPEG")], "dog": [_image(3, "JPEG")]}  # "car" has no image
    write_zero_shot_set(tmp_path, classes, images)
    assert sorted(p.name for p in (tmp_path / "cat").iterdir()) == ["00000.png", "00001.jpg"]

    zs = ZeroShotSet(tmp_path)
    assert zs.classes == [ZeroShotClass("car", "汽车"), ZeroShotClass("cat", "猫"), ZeroShotClass("dog", "狗")]
    assert zs.classnames_source == "classnames.json"
    assert zs.templates == CN_CLIP_TEMPLATES and zs.templates_source == CN_CLIP_TEMPLATES_SOURCE
    got = [(label, data) for batch in zs.iter_image_batches(batch_size=2) for label, data in batch]
    assert got == [(1, images["cat"][0]), (1, images["cat"][1]), (2, images["dog"][0])]
    assert zs.n_images == 3 and zs.skipped.as_dict() == {}


def test_cn_clip_templates_match_the_ones_cn_clip_ships() -> None:
    mod = pytest.importorskip("cn_clip.eval.imagenet_zeroshot_templates")
    assert tuple(t("{c}") for t in mod.openai_imagenet_template) == CN_CLIP_TEMPLATES
    assert len(CN_CLIP_TEMPLATES) == 80
    assert format_template(CN_CLIP_TEMPLATES[0], "猫") == "猫的照片。"


def test_templates_txt_overrides_and_is_checked(tmp_path: Path) -> None:
    write_zero_shot_set(tmp_path, {"a": "苹果"}, {"a": [_image(0)]}, templates=["一张{c}的照片", "{}的图片"])
    zs = ZeroShotSet(tmp_path)
    assert zs.templates == ("一张{c}的照片", "{c}的图片") and zs.templates_source.endswith("templates.txt")
    assert [format_template(t, "苹果") for t in zs.templates] == ["一张苹果的照片", "苹果的图片"]
    (tmp_path / "templates.txt").write_text("# comment\n没有占位符\n", encoding="utf-8")
    with pytest.raises(EvalSetError, match="placeholder"):
        ZeroShotSet(tmp_path)


@pytest.mark.parametrize(
    ("filename", "content", "expected"),
    [
        ("classnames.txt", "b\t香蕉\na\t苹果\n", ["苹果", "香蕉"]),
        ("classnames.txt", "苹果\n香蕉\n", ["苹果", "香蕉"]),  # one a line, sorted directory order
        ("label_cn.txt", "苹果\n香蕉\n", ["苹果", "香蕉"]),  # Chinese-CLIP's file name
        ("classnames.json", '["苹果", "香蕉"]', ["苹果", "香蕉"]),
        (None, None, ["a", "b"]),  # no names: directory names
    ],
)
def test_classnames_files(tmp_path: Path, filename: str | None, content: str | None, expected: list[str]) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.png").write_bytes(_image(0))
    if filename:
        (tmp_path / filename).write_text(content or "", encoding="utf-8")
    assert ZeroShotSet(tmp_path).classnames == expected


def test_classnames_that_contradict_the_folders_are_an_error(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    (tmp_path / "classnames.txt").write_text("苹果\n香蕉\n梨\n", encoding="utf-8")
    with pytest.raises(EvalSetError, match="3 names for 2 class directories"):
        ZeroShotSet(tmp_path)
    (tmp_path / "classnames.txt").unlink()
    (tmp_path / "classnames.json").write_text('{"a": "苹果", "z": "梨"}', encoding="utf-8")
    with pytest.raises(EvalSetError, match="do not exist"):
        ZeroShotSet(tmp_path)


def test_zero_shot_bad_files_are_counted(tmp_path: Path) -> None:
    write_zero_shot_set(tmp_path, {"a": "苹果", "b": "香蕉"}, {"a": [_image(0), _image(1, "JPEG")[:150]],
                                                            "b": [b"GIF89a broken", _image(2)]})
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\0")  # hidden files are not records
    zs = ZeroShotSet(tmp_path)
    got = [label for batch in zs.iter_image_batches() for label, _ in batch]
    assert got == [0, 1]
    assert zs.skipped.as_dict() == {UNDECODABLE_IMAGE: 2, UNSUPPORTED_EXTENSION: 1}
    assert {loc for _, loc, _ in zs.skipped.examples} == {"a/00001.jpg", "b/00000.gif", "b/notes.txt"}


def test_empty_zero_shot_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match="no class directories"):
        ZeroShotSet(tmp_path)
    with pytest.raises(FileNotFoundError):
        ZeroShotSet(tmp_path / "absent")
