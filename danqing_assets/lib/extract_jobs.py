"""Run WARC extraction for one file in a worker process (picklable arguments only; no Dagster imports).

Extraction reads hostile bytes with compiled code (the tokenizer in `danqing_assets/_html.c`, Lexbor, zlib, brotli),
so a file can take its worker process down (a segfault, the kernel's OOM killer) where no `except` can catch it.
`extract_files` contains that: one file per worker process at a time, so a dead worker names the file it died on;
that file is extracted again on the slower pure-Python path (`DANQING_PURE_PYTHON=1`: no C tokenizer) in a fresh
process, and if that worker dies too, the file is counted as an `internal_error` with no rows and the others go on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import polars as pl

from danqing_assets.lib import reasons as R
# fault injection for the tests (lib/faults.py): CRASH_HOOK_ENV="segv:NAME" kills the worker extracting WARC file NAME
from danqing_assets.lib.faults import CRASH_HOOK_ENV, crash_hook as _crash_hook, pause_point  # noqa: F401
from danqing_assets.lib.s3 import S3Config
from danqing_assets.lib.snapshots import WarcRef, open_uri
from danqing_assets.lib.worker_exit import exit_code, pool_processes

# Column types of the `raw_pairs` and `warc_image_captures` tables.
PAIR_SCHEMA = {
    "pair_id": pl.String,
    "snapshot": pl.String,
    "warc_file": pl.String,
    "warc_offset": pl.Int64,
    "warc_record_id": pl.String,
    "page_url": pl.String,
    "domain": pl.String,
    "image_url": pl.String,
    "caption": pl.String,
    "title": pl.String,
    "figcaption": pl.String,
    "img_index": pl.Int32,
    "page_language": pl.String,
    "language_source": pl.String,
    "charset": pl.String,
    "fetch_time": pl.String,
}
CAPTURE_SCHEMA = {
    "snapshot": pl.String,
    "url": pl.String,
    "warc_file": pl.String,
    "warc_offset": pl.Int64,
    "content_type": pl.String,
    "content_length": pl.Int64,
    "http_status": pl.Int32,
}


@dataclass(frozen=True)
class ExtractOptions:
    snapshot: str
    language_prefilter: bool = True
    max_page_bytes: int = 2 * 1024 * 1024
    capture_images: bool = True
    s3: S3Config | None = field(default=None)  # for s3:// WARCs


INTERNAL_ERROR = R.INTERNAL_ERROR  # WarcError kind: the file's worker died, on the fast path and again on the slow one


def extract_ref(ref: WarcRef, options: ExtractOptions):
    """Extract one WARC file; a file that cannot be opened becomes an `unreadable_file` error, not an exception."""
    from danqing_assets.lib.warc import ExtractResult, ExtractStats, WarcError, extract_file

    _crash_hook(ref.name)

    kwargs = dict(
        snapshot=options.snapshot,
        language_prefilter=options.language_prefilter,
        max_page_bytes=options.max_page_bytes,
        capture_images=options.capture_images,
    )
    if "://" not in ref.uri:
        return _guarded(extract_file, ref, ref.uri, kwargs)
    try:
        stream = open_uri(ref.uri, s3_client_factory=options.s3.client if options.s3 else None)
    except Exception as exc:  # noqa: BLE001 - network and permission errors are counted per file
        stats = ExtractStats(warc_file=ref.name)
        stats.errors.append(WarcError(file=ref.name, offset=None, kind="unreadable_file", message=f"{type(exc).__name__}: {exc}"))
        return ExtractResult(pairs=[], captures=[], stats=stats)
    with stream:
        return _guarded(extract_file, ref, stream, kwargs)


def _guarded(extract_file, ref: WarcRef, source, kwargs):
    """The extractor reports bad records itself; anything it did not foresee fails this file only, counted."""
    from danqing_assets.lib.warc import ExtractResult, ExtractStats, WarcError

    try:
        return extract_file(source, ref.name, **kwargs)
    except Exception as exc:  # noqa: BLE001
        stats = ExtractStats(warc_file=ref.name)
        stats.errors.append(WarcError(file=ref.name, offset=None, kind="extract_failed", message=f"{type(exc).__name__}: {exc}"))
        return ExtractResult(pairs=[], captures=[], stats=stats)


def extract_ref_to_parquet(ref: WarcRef, options: ExtractOptions, out_dir: str, index: int):
    """Extract one WARC file into `out_dir/pairs-<index>.parquet` and `captures-<index>.parquet`; return its stats.

    Rows leave the worker as compact Parquet instead of millions of pickled dicts, so the parent holds one Arrow
    table per snapshot rather than every file's Python objects at once."""
    res = extract_ref(ref, options)
    return _write_parts(res, out_dir, index)


def _write_parts(res: Any, out_dir: str, index: int):
    out = Path(out_dir)
    if hasattr(res.pairs, "to_polars"):  # warc.PairRows, from extract_file
        pairs = res.pairs.to_polars(PAIR_SCHEMA)
    else:
        pairs = pl.DataFrame(res.pairs, schema=PAIR_SCHEMA) if res.pairs else pl.DataFrame(schema=PAIR_SCHEMA)
    captures = pl.DataFrame(res.captures, schema=CAPTURE_SCHEMA) if res.captures else pl.DataFrame(schema=CAPTURE_SCHEMA)
    pairs.sort("warc_offset", "img_index").write_parquet(out / f"pairs-{index:06d}.parquet")
    captures.write_parquet(out / f"captures-{index:06d}.parquet")
    return res.stats


def _pure_python_worker() -> None:
    """Initializer of the slow-path worker: no compiled tokenizer or skeleton (numpy + Lexbor, same rows)."""
    os.environ["DANQING_PURE_PYTHON"] = "1"


def internal_error_stats(name: str, message: str):
    """The stats of a file whose worker died on both paths: no rows, one `internal_error`."""
    from danqing_assets.lib.warc import ExtractStats, WarcError

    stats = ExtractStats(warc_file=name)
    stats.errors.append(WarcError(file=name, offset=None, kind=INTERNAL_ERROR, message=message))
    return stats


def extract_files(refs: list[WarcRef], options: ExtractOptions, out_dir: str, *, workers: int = 1,
                  on_done: Callable[[int, int, WarcRef], None] | None = None,
                  mp_start_method: str = "spawn") -> tuple[list, list[str]]:
    """Extract every file into `out_dir/pairs-<i>.parquet` and `captures-<i>.parquet` in `workers` worker processes;
    return the files' stats in file order and the names of the files whose first worker died (retried).

    Each worker holds one file at a time, so a worker that dies names its file: that file is extracted again on the
    slow path (pure Python, a fresh process); when that worker dies too, the file gets empty parts and an
    `internal_error` in its stats. Either way the other files go on. `on_done(done, total, ref)` reports progress.
    Exceptions other than a worker's death (a full disk while writing parts) propagate.
    """
    ctx = get_context(mp_start_method)
    n = max(1, min(workers, len(refs)))
    todo: list[tuple[int, bool]] = [(i, False) for i in range(len(refs))]  # (file index, slow path)
    todo.reverse()  # pop() takes files in order
    idle: list[ProcessPoolExecutor] = []
    slow_idle: list[ProcessPoolExecutor] = []
    running: dict[Future, tuple[int, bool, ProcessPoolExecutor, list[Any]]] = {}
    results: dict[int, Any] = {}
    retried: list[str] = []

    def executor(slow: bool) -> ProcessPoolExecutor:
        pool = slow_idle if slow else idle
        if pool:
            return pool.pop()
        return ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_pure_python_worker if slow else None)

    try:
        while todo or running:
            while todo and len(running) < n:
                i, slow = todo.pop()
                ex = executor(slow)
                fut = ex.submit(extract_ref_to_parquet, refs[i], options, out_dir, i)
                running[fut] = (i, slow, ex, pool_processes(ex))  # now: a broken pool forgets its processes
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                i, slow, ex, procs = running.pop(fut)
                try:
                    results[i] = fut.result()
                except BrokenProcessPool:
                    code = exit_code(procs)
                    ex.shutdown(wait=True, cancel_futures=True)
                    if not slow:
                        retried.append(refs[i].name)
                        todo.append((i, True))
                        continue
                    results[i] = internal_error_stats(
                        refs[i].name, f"extraction worker died twice (compiled path, then pure Python; exit code {code})")
                    _write_parts(_empty_result(results[i]), out_dir, i)
                else:
                    (slow_idle if slow else idle).append(ex)
                if on_done is not None:
                    on_done(len(results), len(refs), refs[i])
                pause_point("raw_pairs_file")  # killed-run tests: stop after N files (no-op in production)
    finally:
        for ex in [*idle, *slow_idle, *(ex for _, _, ex, _ in running.values())]:
            ex.shutdown(wait=True, cancel_futures=True)
    return [results[i] for i in range(len(refs))], retried


def _empty_result(stats: Any):
    from danqing_assets.lib.warc import ExtractResult

    return ExtractResult(pairs=[], captures=[], stats=stats)
