"""Read and write evaluation sets in the layouts they are distributed in.

Two layouts, so that public Chinese benchmarks drop in unchanged and the demo's generated set looks the same:

- **Retrieval, Chinese-CLIP layout** (Flickr30K-CN, COCO-CN, MUGE as OFA-Sys/Chinese-CLIP ships them): a directory with
  ``{split}_imgs.tsv`` (lines ``image_id<TAB>base64 image``; Chinese-CLIP writes URL-safe base64, plain base64 is read
  too) and ``{split}_texts.jsonl`` (lines ``{"text_id": .., "text": "..", "image_ids": [..]}``; a text may have several
  positive images, an image several captions). Ids are compared as strings (``1`` and ``"1"`` are the same image).
- **Zero-shot classification, an image folder per class**: ``root/<class_dir>/*.jpg|png|...`` (torchvision
  ImageFolder: classes in sorted directory order) with the Chinese class names in ``classnames.json``
  (``{"<class_dir>": "中文名"}``) or ``classnames.txt`` (``class_dir<TAB>中文名`` lines, or one name a line in class
  order, the ``label_cn.txt`` convention of Chinese-CLIP); without either, directory names are the class names. Prompt
  templates come from ``templates.txt`` in the set directory (one a line, ``{c}`` or ``{}`` where the class name
  goes), else `CN_CLIP_TEMPLATES`.

Reading never crashes on a bad record: it is skipped under a stable snake_case reason (`SKIP_REASONS`), counted in
``.skipped`` and, for the first few, kept with its line number in ``.examples``. Image bytes are validated by
`image_decode.inspect_image` (a first-frame decode) before an evaluator sees them. A set with no usable image or
text is an `EvalSetError` that says what was skipped. The image TSV is streamed in batches (a MUGE split is GBs).

`write_retrieval_set` / `write_zero_shot_set` write the same layouts (each file to a temporary name, then renamed).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from danqing_assets.lib.fetch.decode import Reject, inspect_image, sniff_image_type

log = logging.getLogger(__name__)

# --- skip reasons (stable names) --------------------------------------------------------------------------------------

MALFORMED_LINE = "malformed_line"  # imgs.tsv: not `id<TAB>base64` (no tab, or more than one)
MISSING_IMAGE_ID = "missing_image_id"  # imgs.tsv: empty image id
BAD_BASE64 = "bad_base64"  # imgs.tsv: the second field is not (URL-safe or plain) base64
UNDECODABLE_IMAGE = "undecodable_image"  # imgs.tsv / class folder: bytes are not an image Pillow can decode
DUPLICATE_IMAGE_ID = "duplicate_image_id"  # imgs.tsv: an id seen on an earlier line (the first one is kept)
BAD_JSON = "bad_json"  # texts.jsonl: not a JSON object
MISSING_TEXT_ID = "missing_text_id"  # texts.jsonl: no text_id (or null / empty)
MISSING_TEXT = "missing_text"  # texts.jsonl: no text, not a string, or blank
MISSING_IMAGE_IDS = "missing_image_ids"  # texts.jsonl: image_ids absent, not a list, or empty
DUPLICATE_TEXT_ID = "duplicate_text_id"  # texts.jsonl: a text_id seen on an earlier line
TEXT_UNKNOWN_IMAGE = "text_unknown_image"  # texts.jsonl: none of its image_ids is a usable image of the split
UNSUPPORTED_EXTENSION = "unsupported_extension"  # class folder: a file that is not an image by its extension
EMBED_FAILED = "embed_failed"  # evaluator: the model returned a non-finite embedding (image it could not decode)

SKIP_REASONS: tuple[str, ...] = (
    MALFORMED_LINE, MISSING_IMAGE_ID, BAD_BASE64, UNDECODABLE_IMAGE, DUPLICATE_IMAGE_ID, BAD_JSON, MISSING_TEXT_ID,
    MISSING_TEXT, MISSING_IMAGE_IDS, DUPLICATE_TEXT_ID, TEXT_UNKNOWN_IMAGE, UNSUPPORTED_EXTENSION, EMBED_FAILED,
)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CLASSNAMES_FILES: tuple[str, ...] = ("classnames.json", "classnames.txt", "label_cn.txt")
TEMPLATES_FILE = "templates.txt"
MAX_EXAMPLES = 20  # skipped records kept with their location, per reader

#: Chinese zero-shot prompt templates as shipped by Chinese-CLIP (OFA-Sys/Chinese-CLIP, pip package cn_clip 1.6.0,
#: ``cn_clip/eval/imagenet_zeroshot_templates.py``, ``openai_imagenet_template``): OpenAI CLIP's 80 ImageNet templates
#: translated to Chinese (the translation is credited there to Wukong, gitee.com/mindspore/models research/mm/wukong).
#: Copied verbatim, duplicates included ("{c}的裁剪照片。" and "{c}的涂鸦照。" appear twice), so a class embedding is the
#: same ensemble Chinese-CLIP evaluates ImageNet-CN with; cn_clip is not a runtime dependency.
CN_CLIP_TEMPLATES: tuple[str, ...] = (
    '{c}的照片。', '质量差的{c}的照片。', '许多{c}的照片。', '{c}的雕塑。', '难以看到{c}的照片。', '{c}的低分辨率照片。',
    '{c}的渲染。', '涂鸦{c}。', '{c}的糟糕照片。', '{c}的裁剪照片。', '{c}的纹身。', '{c}的刺绣照片。', '很难看到{c}的照片。',
    '{c}的明亮照片。', '一张干净的{c}的照片。', '一张包含{c}的照片。', '{c}的深色照片。', '{c}的手绘画。', '我的{c}的照片。',
    '不自然的{c}的照片。', '一张酷的{c}的照片。', '{c}的特写照片。', '{c}的黑白照片。', '一幅{c}的画。', '一幅{c}的绘画。',
    '一张{c}的像素照片。', '{c}的雕像。', '一张{c}的明亮照片。', '{c}的裁剪照片。', '人造的{c}的照片。', '一张关于{c}的照片。',
    '损坏的{c}的jpeg照片。', '{c}的模糊照片。', '{c}的相片。', '一张{c}的好照片。', '{c}的渲染照。', '视频游戏中的{c}。',
    '一张{c}的照片。', '{c}的涂鸦。', '{c}的近距离照片。', '{c}的折纸。', '{c}在视频游戏中。', '{c}的草图。', '{c}的涂鸦照。',
    '{c}的折纸形状。', '低分辨率的{c}的照片。', '玩具{c}。', '{c}的副本。', '{c}的干净的照片。', '一张大{c}的照片。', '{c}的重现。',
    '一张漂亮的{c}的照片。', '一张奇怪的{c}的照片。', '模糊的{c}的照片。', '卡通{c}。', '{c}的艺术作品。', '{c}的素描。', '刺绣{c}。',
    '{c}的像素照。', '{c}的拍照。', '{c}的损坏的照片。', '高质量的{c}的照片。', '毛绒玩具{c}。', '漂亮的{c}的照片。', '小{c}的照片。',
    '照片是奇怪的{c}。', '漫画{c}。', '{c}的艺术照。', '{c}的图形。', '大{c}的照片。', '黑白的{c}的照片。', '{c}毛绒玩具。',
    '一张{c}的深色照片。', '{c}的摄影图。', '{c}的涂鸦照。', '玩具形状的{c}。', '拍了{c}的照片。', '酷酷的{c}的照片。', '照片里的小{c}。',
    '{c}的刺青。',
)
CN_CLIP_TEMPLATES_SOURCE = "Chinese-CLIP cn_clip/eval/imagenet_zeroshot_templates.py:openai_imagenet_template"


class EvalSetError(ValueError):
    """An evaluation set that cannot be evaluated: nothing usable in it, or a layout file that contradicts itself."""


@dataclass
class SkipLog:
    """Per-reason counts of skipped records, with the first `MAX_EXAMPLES` kept as (reason, where, detail)."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, reason: str, where: str, detail: str = "") -> None:
        self.counts[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((reason, where, detail))

    def as_dict(self) -> dict[str, int]:
        return {reason: n for reason, n in sorted(self.counts.items())}

    def summary(self) -> str:
        return ", ".join(f"{reason}={n}" for reason, n in sorted(self.counts.items())) or "nothing skipped"


def decode_base64_image(field_: str | bytes) -> bytes:
    """Bytes of a base64 field, URL-safe (Chinese-CLIP's) or plain alphabet, padding optional; raise ValueError."""
    raw = field_.encode("ascii") if isinstance(field_, str) else bytes(field_)
    raw = raw.strip().translate(bytes.maketrans(b"-_", b"+/"))
    raw += b"=" * (-len(raw) % 4)
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None
    if not data:
        raise ValueError("empty")
    return data


def _check_image(data: bytes) -> str | None:
    """None when `data` decodes as an image, else a short detail."""
    res = inspect_image(data)
    return f"{res.reason}: {res.detail}" if isinstance(res, Reject) else None


# --- retrieval (Chinese-CLIP layout) ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetrievalText:
    """One caption: its id, text, and the ids of its positive images (strings, in file order)."""

    text_id: str
    text: str
    image_ids: tuple[str, ...]


def retrieval_splits(set_dir: str | os.PathLike[str]) -> list[str]:
    """Splits present in a Chinese-CLIP retrieval directory (those with both an imgs.tsv and a texts.jsonl)."""
    d = Path(set_dir)
    return sorted(p.name[: -len("_imgs.tsv")] for p in d.glob("*_imgs.tsv")
                  if (d / p.name.replace("_imgs.tsv", "_texts.jsonl")).is_file())


class RetrievalSet:
    """One split of a Chinese-CLIP-layout retrieval set.

    `iter_image_batches` streams the TSV; `read_texts` reads the (small) JSONL. Both count skipped records in
    `skipped` (a `SkipLog`). Images are yielded after `validate` (default True) has decoded their first frame.
    """

    def __init__(self, set_dir: str | os.PathLike[str], split: str = "test", *, validate: bool = True) -> None:
        self.set_dir = Path(set_dir)
        self.split = split
        self.validate = validate
        self.imgs_path = self.set_dir / f"{split}_imgs.tsv"
        self.texts_path = self.set_dir / f"{split}_texts.jsonl"
        missing = [p.name for p in (self.imgs_path, self.texts_path) if not p.is_file()]
        if missing:
            have = retrieval_splits(self.set_dir) if self.set_dir.is_dir() else []
            raise FileNotFoundError(
                f"retrieval set {self.set_dir} split {split!r}: missing {', '.join(missing)} "
                f"(splits present: {have or 'none'}; expected {{split}}_imgs.tsv + {{split}}_texts.jsonl)")
        self.skipped = SkipLog()
        self.n_images = 0  # usable images yielded so far
        self.dropped_image_refs = 0  # unknown image ids removed from texts that kept another (see read_texts)

    def iter_image_batches(self, batch_size: int = 256) -> Iterator[list[tuple[str, bytes]]]:
        """Yield lists of up to `batch_size` (image_id, image bytes), in file order, reading the TSV line by line."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        seen: set[str] = set()
        batch: list[tuple[str, bytes]] = []
        where = self.imgs_path.name
        with open(self.imgs_path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                parts = line.split(b"\t")
                if len(parts) != 2:
                    self.skipped.add(MALFORMED_LINE, f"{where}:{lineno}", f"{len(parts)} tab-separated fields")
                    continue
                image_id = parts[0].strip().decode("utf-8", errors="replace")
                if not image_id:
                    self.skipped.add(MISSING_IMAGE_ID, f"{where}:{lineno}")
                    continue
                try:
                    data = decode_base64_image(parts[1])
                except ValueError as exc:
                    self.skipped.add(BAD_BASE64, f"{where}:{lineno}", f"{image_id}: {exc}")
                    continue
                if image_id in seen:
                    self.skipped.add(DUPLICATE_IMAGE_ID, f"{where}:{lineno}", image_id)
                    continue
                if self.validate and (problem := _check_image(data)) is not None:
                    self.skipped.add(UNDECODABLE_IMAGE, f"{where}:{lineno}", f"{image_id}: {problem}")
                    continue
                seen.add(image_id)
                self.n_images += 1
                batch.append((image_id, data))
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def read_texts(self, known_image_ids: Collection[str] | None = None) -> list[RetrievalText]:
        """The usable captions, in file order.

        known_image_ids: the images actually available (those `iter_image_batches` yielded and the model embedded).
          A text none of whose image_ids is known is skipped as `text_unknown_image`; unknown ids of a text that keeps
          another are dropped from it and counted in `dropped_image_refs`. None: no check.
        """
        out: list[RetrievalText] = []
        seen: set[str] = set()
        self.dropped_image_refs = 0
        where = self.texts_path.name
        with open(self.texts_path, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                loc = f"{where}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    self.skipped.add(BAD_JSON, loc, str(exc))
                    continue
                if not isinstance(obj, dict):
                    self.skipped.add(BAD_JSON, loc, f"a JSON {type(obj).__name__}, not an object")
                    continue
                text_id = obj.get("text_id")
                if text_id is None or isinstance(text_id, (dict, list, bool)) or str(text_id).strip() == "":
                    self.skipped.add(MISSING_TEXT_ID, loc)
                    continue
                text_id = str(text_id).strip()
                text = obj.get("text")
                if not isinstance(text, str) or not text.strip():
                    self.skipped.add(MISSING_TEXT, loc, text_id)
                    continue
                ids = obj.get("image_ids")
                if not isinstance(ids, list) or not ids or any(i is None or isinstance(i, (dict, list)) for i in ids):
                    self.skipped.add(MISSING_IMAGE_IDS, loc, text_id)
                    continue
                if text_id in seen:
                    self.skipped.add(DUPLICATE_TEXT_ID, loc, text_id)
                    continue
                image_ids = tuple(dict.fromkeys(str(i).strip() for i in ids))
                if known_image_ids is not None:
                    known = tuple(i for i in image_ids if i in known_image_ids)
                    if not known:
                        self.skipped.add(TEXT_UNKNOWN_IMAGE, loc, f"{text_id} -> {list(image_ids)}")
                        continue
                    self.dropped_image_refs += len(image_ids) - len(known)
                    image_ids = known
                seen.add(text_id)
                out.append(RetrievalText(text_id, text, image_ids))
        return out


def write_retrieval_set(
    set_dir: str | os.PathLike[str],
    split: str,
    images: Mapping[str | int, bytes],
    texts: Sequence[tuple[str | int, str, Sequence[str | int]]],
) -> tuple[Path, Path]:
    """Write `{split}_imgs.tsv` (URL-safe base64, as Chinese-CLIP does) and `{split}_texts.jsonl`; return both paths.

    texts: (text_id, text, image_ids). Ids are written as given (Chinese-CLIP uses ints); nothing is validated, so tests
    can write broken sets too.
    """
    d = Path(set_dir)
    d.mkdir(parents=True, exist_ok=True)
    imgs_path = d / f"{split}_imgs.tsv"
    texts_path = d / f"{split}_texts.jsonl"
    with _atomic(imgs_path, "wb") as fh:
        for image_id, data in images.items():
            fh.write(f"{image_id}\t".encode() + base64.urlsafe_b64encode(bytes(data)) + b"\n")
    with _atomic(texts_path, "w") as fh:
        for text_id, text, image_ids in texts:
            fh.write(json.dumps({"text_id": text_id, "text": text, "image_ids": list(image_ids)},
                                ensure_ascii=False) + "\n")
    return imgs_path, texts_path


# --- zero-shot classification (image folder per class) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ZeroShotClass:
    """A class: its directory name and the (Chinese) name the prompts are built from."""

    dir_name: str
    name: str


def format_template(template: str, classname: str) -> str:
    """Put `classname` where `{c}` (clip_benchmark's placeholder) or `{}` stands; other braces are left alone."""
    return template.replace("{c}", classname).replace("{}", classname)


def _read_classnames(root: Path, dirs: list[str]) -> tuple[dict[str, str], str]:
    """dir name -> class name, and the file it came from ("directory names" when none)."""
    for fname in CLASSNAMES_FILES:
        path = root / fname
        if not path.is_file():
            continue
        if fname.endswith(".json"):
            obj = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(obj, list):
                pairs = list(zip(dirs, (str(x) for x in obj))) if len(obj) == len(dirs) else None
            elif isinstance(obj, dict):
                pairs = [(str(k), str(v)) for k, v in obj.items()]
            else:
                raise EvalSetError(f"{path}: expected an object {{class_dir: name}} or a list of names")
            if pairs is None:
                raise EvalSetError(f"{path}: {len(obj)} names for {len(dirs)} class directories")
        else:
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
            lines = [ln for ln in lines if ln and not ln.startswith("#")]
            if lines and all("\t" in ln for ln in lines):
                pairs = [tuple(p.strip() for p in ln.split("\t", 1)) for ln in lines]  # type: ignore[misc]
            elif len(lines) == len(dirs):
                pairs = list(zip(dirs, lines))
            else:
                raise EvalSetError(f"{path}: {len(lines)} names for {len(dirs)} class directories (write "
                                   "`class_dir<TAB>name` lines, or one name a line in sorted directory order)")
        names = dict(pairs)
        unknown = sorted(set(names) - set(dirs))
        if unknown:
            raise EvalSetError(f"{path}: names for directories that do not exist: {unknown[:5]}")
        return {d: names.get(d, d) for d in dirs}, fname
    return {d: d for d in dirs}, "directory names"


def _read_templates(root: Path) -> tuple[tuple[str, ...], str]:
    path = root / TEMPLATES_FILE
    if not path.is_file():
        return CN_CLIP_TEMPLATES, CN_CLIP_TEMPLATES_SOURCE
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    templates = tuple(ln.replace("{}", "{c}") for ln in lines if ln and not ln.startswith("#"))
    if not templates:
        raise EvalSetError(f"{path}: no templates")
    bad = [t for t in templates if "{c}" not in t]
    if bad:
        raise EvalSetError(f"{path}: templates without a {{c}} or {{}} placeholder: {bad[:3]}")
    return templates, str(path)


class ZeroShotSet:
    """A zero-shot classification set: an image folder per class (see the module docstring).

    `classes` lists every class directory, with or without images (all are candidates of the classifier, so chance
    is 1/len(classes)); `templates` and `templates_source` say which prompts build the class embeddings.
    """

    def __init__(self, set_dir: str | os.PathLike[str], *, validate: bool = True) -> None:
        self.set_dir = Path(set_dir)
        self.validate = validate
        if not self.set_dir.is_dir():
            raise FileNotFoundError(f"zero-shot set {self.set_dir}: not a directory")
        dirs = sorted(p.name for p in self.set_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not dirs:
            raise EvalSetError(f"zero-shot set {self.set_dir}: no class directories (expected root/<class_dir>/*.jpg)")
        names, self.classnames_source = _read_classnames(self.set_dir, dirs)
        self.classes: list[ZeroShotClass] = [ZeroShotClass(d, names[d]) for d in dirs]
        self.templates, self.templates_source = _read_templates(self.set_dir)
        self.skipped = SkipLog()
        self.n_images = 0

    @property
    def classnames(self) -> list[str]:
        return [c.name for c in self.classes]

    def iter_image_batches(self, batch_size: int = 256) -> Iterator[list[tuple[int, bytes]]]:
        """Yield lists of up to `batch_size` (class index, image bytes); files in sorted order within a class."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch: list[tuple[int, bytes]] = []
        for label, cls in enumerate(self.classes):
            folder = self.set_dir / cls.dir_name
            for path in sorted(folder.rglob("*")):
                if not path.is_file() or path.name.startswith("."):
                    continue
                where = f"{cls.dir_name}/{path.relative_to(folder)}"
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    self.skipped.add(UNSUPPORTED_EXTENSION, where)
                    continue
                data = path.read_bytes()
                if self.validate and (problem := _check_image(data)) is not None:
                    self.skipped.add(UNDECODABLE_IMAGE, where, problem)
                    continue
                self.n_images += 1
                batch.append((label, data))
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch


def write_zero_shot_set(
    set_dir: str | os.PathLike[str],
    classes: Mapping[str, str],
    images: Mapping[str, Sequence[bytes]],
    templates: Sequence[str] | None = None,
) -> Path:
    """Write an image-folder zero-shot set: `classnames.json`, `<class_dir>/<n>.<ext>` and, if given, `templates.txt`.

    classes: class dir -> Chinese class name (every class gets a directory, also one without images).
    images: class dir -> encoded images; the extension follows the sniffed format (unknown bytes are written as .bin,
      which the reader then reports as `unsupported_extension`).
    templates: prompt templates with `{c}` (or `{}`); None leaves the default (`CN_CLIP_TEMPLATES`).
    """
    d = Path(set_dir)
    d.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(images) - set(classes))
    if unknown:
        raise ValueError(f"images for classes not in `classes`: {unknown}")
    for dir_name in classes:
        if not dir_name or "/" in dir_name or dir_name.startswith("."):
            raise ValueError(f"bad class directory name {dir_name!r}")
        folder = d / dir_name
        folder.mkdir(exist_ok=True)
        for i, data in enumerate(images.get(dir_name, ())):
            kind = sniff_image_type(bytes(data[:16])) or "bin"
            ext = {"jpeg": "jpg"}.get(kind, kind)
            with _atomic(folder / f"{i:05d}.{ext}", "wb") as fh:
                fh.write(bytes(data))
    with _atomic(d / "classnames.json", "w") as fh:
        json.dump(dict(classes), fh, ensure_ascii=False, indent=1)
    if templates is not None:
        with _atomic(d / TEMPLATES_FILE, "w") as fh:
            fh.write("".join(f"{t}\n" for t in templates))
    return d


@contextlib.contextmanager
def _atomic(path: Path, mode: str) -> Iterator[IO[Any]]:
    """Open `.<name>.tmp-<pid>` for writing and rename it onto `path` on success (removed on failure)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
