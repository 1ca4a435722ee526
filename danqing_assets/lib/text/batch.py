"""The per-chunk caption scores of `source_scores` (stage 1) and `text_scores` (stage 2), and the worker pool that
computes chunks on every core.

A step reads its input in chunks of a bounded number of rows, `map_chunks` hands each chunk to a worker process and
yields the scored chunks in input order, so the step writes them as they come: it holds a few chunks at a time
(at most two per worker), never the partition. Every score is a function of one caption (and one domain), so scoring
in chunks gives the same table as scoring the whole partition at once (tests compare both on real crawl data).

Each caption is segmented by jieba once: `SourceChunk` counts its words on the folded caption, then computes its
stage-2 noun count on the cleaned caption while the blocks are still in the segmentation cache (`segment.cut`), and
stores it in `source_scores.noun_count`; `TextChunk` takes it from there (when the caption is unchanged) and segments
only captions without one.

With `workers` = w, the step's own process scores every w-th chunk itself and w - 1 worker processes score the rest,
so w cores work and only w - 1 processes are started: each pays about 3 CPU seconds to load jieba, OpenCC, the
vocabulary, the safety classifier and lingua, and holds about 0.5 GB. Workers are started with `spawn` (no state
inherited from the step's process). A worker that dies does not take the step down: its chunk and every later one
are scored in the step's own process, and `workers_died` says so.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import polars as pl

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SOURCE_SCORE_SCHEMA: dict[str, Any] = {
    "snapshot": pl.String, "pair_id": pl.String, "caption_md5": pl.String, "blacklisted_by": pl.String,
    "word_count": pl.Int64, "unsafe_score": pl.Float64, "unsafe_category": pl.String, "unsafe_term": pl.String,
    "caption_norm": pl.String, "noun_count": pl.Int64,
}

TEXT_SCORE_SCHEMA: dict[str, Any] = {
    "pair_id": pl.String, "caption_t2s": pl.String, "caption_clean": pl.String, "han_share": pl.Float64,
    "language": pl.String, "noun_count": pl.Int64, "unk_count": pl.Int64, "entropy": pl.Float64,
    "sensitive_hits": pl.Int64, "sensitive_terms": pl.String, "sensitive_score": pl.Float64,
    "sensitive_category": pl.String, "snapshot": pl.String, "caption_md5": pl.String,
}


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@functools.cache
def _classifier(spec: str) -> Any:
    from danqing_assets.lib.safety import load_text_safety_classifier

    return load_text_safety_classifier(spec)


@functools.cache
def _blacklist(path: str | None) -> frozenset[str]:
    from danqing_assets.lib.domains import load_domain_list

    return load_domain_list(path)


@dataclass(frozen=True)
class SourceChunk:
    """Stage-1 scores of a chunk of raw pairs (`pair_id, domain, caption`): see `source_scores`."""

    snapshot: str
    classifier: str = "safety"
    blacklist_path: str | None = None

    def __call__(self, raw: pl.DataFrame) -> pl.DataFrame:
        from danqing_assets.lib.decide import caption_md5
        from danqing_assets.lib.domains import blacklist_match
        from danqing_assets.lib.safety import stage_scores
        from danqing_assets.lib.text import clean_noun_counts, count_words_many, normalize_caption

        blacklist = _blacklist(self.blacklist_path)
        captions = raw["caption"].fill_null("").to_list()
        domains = raw["domain"].to_list()
        matches = {d: blacklist_match(d, blacklist) for d in set(domains)}
        uniques = list(dict.fromkeys(captions))
        at = {c: i for i, c in enumerate(uniques)}
        idx = [at[c] for c in captions]
        words = count_words_many(uniques)  # segments each caption's folded form: its blocks enter the cut cache
        nouns = clean_noun_counts(uniques)  # the stage-2 noun count: mostly cache hits
        verdicts = stage_scores(_classifier(self.classifier), uniques, "source") if uniques else []
        norms = [normalize_caption(c) for c in uniques]
        return pl.DataFrame(
            {
                "snapshot": [self.snapshot] * raw.height,
                "pair_id": raw["pair_id"],
                "caption_md5": caption_md5(raw["caption"].to_list()),
                "blacklisted_by": [matches[d] for d in domains],
                "word_count": [words[i] for i in idx],
                "unsafe_score": [float(verdicts[i].score) for i in idx],
                "unsafe_category": [verdicts[i].category for i in idx],
                "unsafe_term": [verdicts[i].evidence or None for i in idx],
                "caption_norm": [norms[i] for i in idx],
                "noun_count": [nouns[i] for i in idx],
            },
            schema=SOURCE_SCORE_SCHEMA,
        )


@dataclass(frozen=True)
class TextChunk:
    """Stage-2 scores of a chunk of stage-1 survivors (`pair_id, caption`, optional `stage1_nouns`: the noun count
    `source_scores` stored for that very caption): see `text_scores`."""

    snapshot: str
    classifier: str = "safety"
    vocab_path: str | None = None

    def __call__(self, pairs: pl.DataFrame) -> pl.DataFrame:
        from danqing_assets.lib.decide import caption_md5
        from danqing_assets.lib.text import score_captions

        captions = pairs["caption"].to_list()
        nouns = pairs["stage1_nouns"].to_list() if "stage1_nouns" in pairs.columns else None
        scores = score_captions(captions, vocab_path=self.vocab_path, safety_classifier=_classifier(self.classifier),
                                nouns=nouns)
        return pl.concat([pairs.select("pair_id"), scores], how="horizontal").with_columns(
            pl.lit(self.snapshot, dtype=pl.String).alias("snapshot"),
            pl.Series("caption_md5", caption_md5(captions), dtype=pl.String),
        )


@dataclass
class PoolReport:
    """What `map_chunks` did: chunks scored, by the pool or in the step's process, and worker deaths."""

    workers: int = 1
    chunks: int = 0
    chunks_in_process: int = 0
    workers_died: int = 0
    errors: list[str] = field(default_factory=list)


def map_chunks(fn: Callable[[T], R], chunks: Iterable[T], *, workers: int, report: PoolReport | None = None,
               in_flight_per_worker: int = 2) -> Iterator[R]:
    """`fn(chunk)` for every chunk, in order, on `workers` cores: this process computes every `workers`-th chunk and
    `workers` - 1 worker processes (`spawn`) the others; at most `in_flight_per_worker` x `workers` chunks are held at
    once. `workers` <= 1, or a single chunk, runs in this process. When a worker dies, that chunk and every later one
    are computed in this process."""
    report = report if report is not None else PoolReport()
    it = iter(chunks)
    first = next(it, None)
    if first is None:
        return
    second = next(it, None)
    if workers <= 1 or second is None:
        report.workers = 1
        for chunk in (first, *(() if second is None else (second,))):
            report.chunks += 1
            report.chunks_in_process += 1
            yield fn(chunk)
        for chunk in it:
            report.chunks += 1
            report.chunks_in_process += 1
            yield fn(chunk)
        return

    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    report.workers = workers
    ex = ProcessPoolExecutor(max_workers=workers - 1, mp_context=get_context("spawn"))
    pending: deque[tuple[T, Any]] = deque()
    broken = False
    submitted = 0

    def died(err: BaseException) -> None:
        nonlocal broken
        if not broken:
            report.workers_died += 1
            report.errors.append(str(err)[:200])
            log.warning("a scoring worker died (%s): the rest is scored in the step's process", err)
        broken = True

    def submit(chunk: T) -> None:
        nonlocal submitted
        mine = submitted % workers == 0  # this process's share: computed when it reaches the head of the queue
        submitted += 1
        if not broken and not mine:
            try:
                pending.append((chunk, ex.submit(fn, chunk)))
                return
            except BrokenProcessPool as err:
                died(err)
        pending.append((chunk, None))

    def take() -> R:
        chunk, fut = pending.popleft()
        report.chunks += 1
        if fut is not None:
            try:
                return fut.result()
            except BrokenProcessPool as err:
                died(err)
        report.chunks_in_process += 1
        return fn(chunk)

    try:
        for chunk in (first, second):
            submit(chunk)
        for chunk in it:
            submit(chunk)
            while len(pending) >= workers * in_flight_per_worker:
                yield take()
        while pending:
            yield take()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
