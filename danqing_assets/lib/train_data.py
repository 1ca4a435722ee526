"""Training examples for `lib.train`: (image bytes, caption) pairs from records or WebDataset tar shards, decoded in
DataLoader workers, in an order that depends on the seed only.

Two example sources share one tiny protocol (`len(ds)` and `ds.get(i) -> (image bytes, caption)`):
- `RecordDataset`: a sequence of (image reference, caption) records and a `load_bytes(reference) -> bytes` callable
  (an image-store lookup, a file read; by default the reference is the bytes themselves).
- `TarShardDataset`: WebDataset tar shards (`<key>.jpg|.jpeg|.png|.webp` + `<key>.txt` members), indexed once with the
  stdlib `tarfile` (headers only) and then read by offset with `os.pread`, so any example is one read away. That
  random access is what makes the order below possible; it needs uncompressed tars (the WebDataset norm: JPEGs do
  not compress), so a `.tar.gz` is refused with a clear error rather than decompressed again for every example.

Order and resume. The trainer consumes *micro-batches* named by a key (epoch, index). Epoch e visits the examples in
`epoch_order(n, seed, e)` (a permutation drawn from (seed, e) alone) and micro-batch i holds positions
[i*m, (i+1)*m) of it (the last partial micro-batch of an epoch is dropped, as open_clip does). A checkpoint therefore
only stores the next key, and a resumed run, or a run with a different number of workers, reads exactly the same
examples. Random augmentation in `preprocess` (open_clip's train transform crops at random) is seeded per
micro-batch from (seed, epoch, index) inside a forked RNG scope, so it is the same for any worker layout and never
disturbs the training process's own RNG (dropout), which the checkpoint restores.

Decoding, `preprocess` and tokenisation all run in `MicroBatchSource.__getitem__`, i.e. inside the DataLoader
worker processes: the training process only receives ready tensors. An example whose bytes cannot be loaded or
decoded is skipped and counted by reason (`load_error`, `decode_error`, `decompression_bomb`, `bad_caption`), never
raised; the micro-batch is just smaller. JPEGs are decoded at the smallest DCT scale that still covers the model's
input size (`load_rgb(draft_size=...)`), which is several times cheaper than a full decode followed by a resize.
"""

from __future__ import annotations

import io
import os
import random
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from danqing_assets.lib.fetch.decode import ImageRejected, load_rgb
from danqing_assets.lib.reasons import DECODE_ERROR

LOAD_ERROR = "load_error"  # load_bytes raised (missing object, I/O error)
BAD_CAPTION = "bad_caption"  # the caption is not a non-empty string
IMAGE_EXTS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")


class ExampleSource(Protocol):
    """What `MicroBatchSource` reads: `len()` examples, `get(i)` -> (image bytes, caption); `get` may raise."""

    def __len__(self) -> int: ...

    def get(self, i: int) -> tuple[bytes, str]: ...


class RecordDataset:
    """Examples from in-memory records: `records[i] = (image_ref, caption)`, bytes = `load_bytes(image_ref)`.

    `load_bytes` runs in the worker processes; with the default "fork" start method it need not be picklable.
    """

    def __init__(self, records: Sequence[tuple[Any, str]], load_bytes: Callable[[Any], bytes] | None = None) -> None:
        self.records = records
        self.load_bytes = load_bytes

    def __len__(self) -> int:
        return len(self.records)

    def get(self, i: int) -> tuple[bytes, str]:
        ref, caption = self.records[i]
        data = ref if self.load_bytes is None else self.load_bytes(ref)
        return bytes(data), caption


_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # WebDataset: key = up to the first dot of the basename


class TarShardDataset:
    """Examples from uncompressed WebDataset tar shards, indexed at construction (headers only).

    A key needs one image member (first of `image_exts` present) and a `caption_ext` member; keys missing either are
    counted in `self.incomplete` and left out. Captions are decoded as UTF-8 (invalid bytes replaced) and stripped.
    """

    def __init__(
        self, paths: Iterable[str | os.PathLike[str]], *, image_exts: Sequence[str] = IMAGE_EXTS,
        caption_ext: str = "txt",
    ) -> None:
        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise ValueError("TarShardDataset: no shard paths given")
        self.image_exts = tuple(e.lower() for e in image_exts)
        self.caption_ext = caption_ext.lower()
        # one row per example: shard number, image offset, image size, caption offset, caption size
        rows: list[tuple[int, int, int, int, int]] = []
        self.keys: list[str] = []
        self.incomplete = 0
        for shard, path in enumerate(self.paths):
            for key, members in self._index_shard(path):
                image = next((members[e] for e in self.image_exts if e in members), None)
                caption = members.get(self.caption_ext)
                if image is None or caption is None:
                    self.incomplete += 1
                    continue
                rows.append((shard, *image, *caption))
                self.keys.append(key)
        self._index = np.array(rows, dtype=np.int64).reshape(-1, 5)
        self._fds: dict[int, int] = {}
        self._fd_pid = -1

    @staticmethod
    def _index_shard(path: str) -> Iterator[tuple[str, dict[str, tuple[int, int]]]]:
        """(key, {ext: (data offset, size)}) for each sample of one shard, in tar order."""
        try:
            tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed below; "r:" refuses compressed tars
        except tarfile.ReadError as exc:
            raise ValueError(f"{path}: not an uncompressed tar shard ({exc}); decompress .tar.gz shards first"
                             ) from None
        with tar:
            key: str | None = None
            members: dict[str, tuple[int, int]] = {}
            for m in tar:
                if not m.isfile():
                    continue
                match = _KEY_EXT.match(m.name)
                if match is None:
                    continue
                k, ext = match.group(1), match.group(2).lower()
                if k != key:
                    if key is not None:
                        yield key, members
                    key, members = k, {}
                members.setdefault(ext, (m.offset_data, m.size))
            if key is not None:
                yield key, members

    def __len__(self) -> int:
        return len(self._index)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"], state["_fd_pid"] = {}, -1  # file descriptors do not travel to spawned workers
        return state

    def _fd(self, shard: int) -> int:
        if self._fd_pid != os.getpid():  # after a fork: own descriptors (pread has no shared offset, but be tidy)
            self._fds, self._fd_pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return fd

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        fd = self._fd(shard)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise OSError(f"{self.paths[shard]}: short read at {offset} ({len(data)} of {size} bytes)")
        return data

    def close(self) -> None:
        """Close this process's shard file descriptors (reopened on the next `get`)."""
        if self._fd_pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def get(self, i: int) -> tuple[bytes, str]:
        shard, img_off, img_size, txt_off, txt_size = (int(v) for v in self._index[i])
        caption = self._read(shard, txt_off, txt_size).decode("utf-8", errors="replace").strip()
        return self._read(shard, img_off, img_size), caption


def write_shard(path: str | os.PathLike[str], examples: Iterable[tuple[bytes, str]], *, ext: str = "jpg",
                start_key: int = 0) -> Path:
    """Write (image bytes, caption) pairs as a WebDataset tar shard (`{n:09d}.{ext}` + `.txt`); atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for n, (data, caption) in enumerate(examples, start=start_key):
            for suffix, payload in ((ext, bytes(data)), ("txt", caption.encode("utf-8"))):
                info = tarfile.TarInfo(f"{n:09d}.{suffix}")
                info.size = len(payload)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(payload))
    os.replace(tmp, target)
    return target


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The visiting order of `n` examples in `epoch`: a permutation that depends on (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the augmentation RNGs for micro-batch (epoch, index)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ImageViews:
    """A second view of a training image for the trainer's instance loss (`TrainConfig.view_weight`): the picture as
    a copy of it on the web might differ - cropped and shifted (`crop_scale` of the area), relit and tinted
    (`jitter`), softened (`blur_p`), re-encoded as JPEG at a random quality in `jpeg`, with sensor-like noise (standard
    deviation up to `noise` of the range) - as a float tensor (3, size, size) normalised with `mean` / `std`.

    Picklable (it runs in the DataLoader workers); all randomness comes from torch's RNG, which `MicroBatchSource`
    seeds per micro-batch, so views are the same for any worker layout and after a resume.
    """

    def __init__(
        self, size: int, mean: Sequence[float], std: Sequence[float], *, crop_scale: tuple[float, float] = (0.7, 1.0),
        jitter: float = 0.25, blur_p: float = 0.5, jpeg: tuple[int, int] = (60, 95), noise: float = 0.04,
    ) -> None:
        if size < 1 or len(mean) != 3 or len(std) != 3 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"ImageViews: bad size {size}, mean {mean}, std {std} or crop_scale {crop_scale}")
        if not 1 <= jpeg[0] <= jpeg[1] <= 100 or jitter < 0 or noise < 0 or not 0 <= blur_p <= 1:
            raise ValueError(f"ImageViews: bad jpeg {jpeg}, jitter {jitter}, noise {noise} or blur_p {blur_p}")
        from torchvision.transforms import v2

        self.size, self.mean, self.std = int(size), tuple(mean), tuple(std)
        self.blur_p, self.jpeg, self.noise = blur_p, jpeg, noise
        self._crop = v2.RandomResizedCrop(self.size, scale=crop_scale, antialias=True,
                                          interpolation=v2.InterpolationMode.BICUBIC)
        self._jitter = v2.ColorJitter(brightness=jitter, contrast=jitter * 0.8, saturation=jitter * 0.8,
                                      hue=jitter * 0.08) if jitter else None
        self._blur = v2.GaussianBlur(3, sigma=(0.1, 1.0))

    def __call__(self, rgb: Any) -> Any:
        import torch
        from PIL import Image
        from torchvision.transforms import v2

        img = self._crop(rgb)
        if self._jitter is not None:
            img = self._jitter(img)
        if self.blur_p and float(torch.rand(())) < self.blur_p:
            img = self._blur(img)
        quality = int(torch.randint(self.jpeg[0], self.jpeg[1] + 1, ()))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as reread:
            x = v2.functional.to_dtype(v2.functional.pil_to_tensor(reread.convert("RGB")), torch.float32, scale=True)
        if self.noise:
            x = (x + torch.randn_like(x) * float(torch.rand(())) * self.noise).clamp_(0, 1)
        return v2.functional.normalize(x, list(self.mean), list(self.std))


class MicroBatchSource:
    """A map-style dataset whose item keys are micro-batches (epoch, index); used with `DataLoader(batch_size=None)`.

    `self[(epoch, index)]` loads, decodes, preprocesses and tokenises that micro-batch and returns a dict:
    epoch, index, images (float tensor (b, 3, H, W), or None when nothing decoded), views (the same shape from
    `view_preprocess`, or None when it is not given), tokens (LongTensor or None), size b, ids (LongTensor (b,): the
    dataset indices of the examples kept), skipped {reason: count}, and errors (up to 3 "reason: detail" strings, for
    the log). A view that fails skips its example like an image that does not decode.
    """

    def __init__(
        self, examples: ExampleSource, *, micro_batch_size: int, preprocess: Callable[[Any], Any],
        tokenizer: Callable[[list[str]], Any], seed: int, draft_size: int | None = None,
        view_preprocess: Callable[[Any], Any] | None = None,
    ) -> None:
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        if len(examples) < micro_batch_size:
            raise ValueError(f"the dataset has {len(examples)} examples, fewer than one micro-batch "
                             f"({micro_batch_size})")
        self.examples = examples
        self.micro_batch_size = micro_batch_size
        self.preprocess = preprocess
        self.view_preprocess = view_preprocess
        self.tokenizer = tokenizer
        self.seed = seed
        self.draft_size = draft_size
        self.batches_per_epoch = len(examples) // micro_batch_size
        self._order: tuple[int, np.ndarray] | None = None

    def indices(self, epoch: int, index: int) -> np.ndarray:
        """Example indices of micro-batch (epoch, index)."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.examples), self.seed, epoch))
        m = self.micro_batch_size
        return self._order[1][index * m : (index + 1) * m]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        import torch

        epoch, index = int(key[0]), int(key[1])
        images, views, captions, ids = [], [], [], []
        skipped: dict[str, int] = {}
        errors: list[str] = []

        def skip(reason: str, detail: str) -> None:
            skipped[reason] = skipped.get(reason, 0) + 1
            if len(errors) < 3:
                errors.append(f"{reason}: {detail}")

        draft = (self.draft_size, self.draft_size) if self.draft_size else None
        s = batch_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            np.random.seed(s % 2**32)
            try:
                for i in self.indices(epoch, index):
                    try:
                        data, caption = self.examples.get(int(i))
                    except Exception as exc:  # noqa: BLE001 - one lost example, not a crashed run
                        skip(LOAD_ERROR, f"example {i}: {type(exc).__name__}: {exc}")
                        continue
                    if not isinstance(caption, str) or not caption.strip():
                        skip(BAD_CAPTION, f"example {i}: {caption!r:.40}")
                        continue
                    try:
                        rgb = load_rgb(data, draft_size=draft)
                        image = self.preprocess(rgb)
                        view = self.view_preprocess(rgb) if self.view_preprocess is not None else None
                    except ImageRejected as exc:
                        skip(exc.reason, f"example {i}: {exc.detail}")
                        continue
                    except Exception as exc:  # noqa: BLE001 - preprocess failing on an odd image
                        skip(DECODE_ERROR, f"example {i}: {type(exc).__name__}: {exc}")
                        continue
                    images.append(image)
                    if view is not None:
                        views.append(view)
                    captions.append(caption)
                    ids.append(int(i))
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
        return {
            "epoch": epoch,
            "index": index,
            "images": torch.stack(images) if images else None,
            "views": torch.stack(views) if views else None,
            "tokens": self.tokenizer(captions) if captions else None,
            "size": len(images),
            "ids": torch.tensor(ids, dtype=torch.long),
            "skipped": skipped,
            "errors": errors,
        }


class KeySampler:
    """Micro-batch keys (epoch, index) from `start` on, epoch after epoch, without end."""

    def __init__(self, start: tuple[int, int], batches_per_epoch: int) -> None:
        self.start = start
        self.batches_per_epoch = batches_per_epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, index = self.start
        while True:
            if index >= self.batches_per_epoch:
                epoch, index = epoch + 1, 0
            yield epoch, index
            index += 1


def next_key(key: tuple[int, int], batches_per_epoch: int) -> tuple[int, int]:
    """The key after `key`."""
    epoch, index = key[0], key[1] + 1
    return (epoch + 1, 0) if index >= batches_per_epoch else (epoch, index)


def micro_batches(
    source: MicroBatchSource, start: tuple[int, int], *, workers: int, pin_memory: bool = False,
    prefetch_factor: int = 4,
) -> Any:
    """A DataLoader over `source` from key `start` on (infinite). `workers` processes decode ahead of the training
    loop; the loader's own generator is private, so creating it does not consume the global torch RNG."""
    import torch

    return torch.utils.data.DataLoader(
        source, batch_size=None, sampler=KeySampler(start, source.batches_per_epoch), num_workers=workers,
        pin_memory=pin_memory, prefetch_factor=prefetch_factor if workers > 0 else None,
        generator=torch.Generator().manual_seed(source.seed),
    )
