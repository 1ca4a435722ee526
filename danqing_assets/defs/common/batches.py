"""Several batches in one run: the backfill policy of the per-batch assets, and the wrapper that lets their bodies,
written for one batch, run over a range of them.

A Dagster backfill of N batches launches one run per batch by default. `BATCH_BACKFILL_POLICY` groups up to
`BATCHES_PER_RUN` (4) batches per run instead, which saves a run start per batch (on ECS, a task start: tens of seconds
to a minute) and keeps a run's memory that of one batch, since the batches run one after another inside it.

`each_batch` makes that safe for a body that reads `context.partition_key` (which a run of several partitions does not
have): the body runs once per batch of the run, in key order, with a context whose partition is that batch, and
- each batch's metadata goes to its own materialization (`context.add_asset_metadata(..., partition_key=batch)`), so
  the funnel, `danqing funnel` and the UI read per-batch counts as they do from a one-batch run;
- each asset check is reported once for the step: it passes only if it passed for every batch, its metadata names the
  batches where it failed, and a failed blocking check stops the run's downstream steps for all of its batches (a
  retry redoes them all: each batch's files are replaced, never appended to);
- an exception in one batch fails the step, and with it every batch of the run.
A run of one batch calls the body as it is, unchanged.

`curated_pairs` (stage 4's cross-batch merge) keeps the default policy: one run per batch, because the merge accepts
pairs in the order batches arrive, and `danqing backfill --parallel N` merges in batch order.
"""

import functools
import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

# Dagster marks the `backfill_policy` parameter beta and warns once per asset that uses it, at import: ten lines on
# every command. The policy's effect is pinned by defs/common/test_batches.py, so a change of behaviour in a Dagster
# upgrade fails there instead.
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy` of function `(multi_)?asset`",
                        category=dg.BetaWarning)

BATCHES_PER_RUN = 4
"""Batches per run in a Dagster backfill of the per-batch assets (docs/scaling.md section 5b)."""

BATCH_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=BATCHES_PER_RUN)


class _OneBatch:
    """The step's context as one batch of it sees it: `partition_key` is that batch; everything else is the step's."""

    def __init__(self, context: Any, key: str) -> None:
        self._context = context
        self._key = key

    @property
    def partition_key(self) -> str:
        return self._key

    @property
    def partition_keys(self) -> list[str]:
        return [self._key]

    @property
    def partition_key_range(self) -> dg.PartitionKeyRange:
        return dg.PartitionKeyRange(self._key, self._key)

    @property
    def has_partition_key(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _results(out: Any) -> list[dg.MaterializeResult]:
    results = list(out) if inspect.isgenerator(out) else [out]
    for r in results:
        if not isinstance(r, dg.MaterializeResult):
            raise TypeError(f"a per-batch asset body must return or yield MaterializeResult, got {type(r).__name__}")
    return results


def _merged_checks(per_batch: list[tuple[str, dg.AssetCheckResult]]) -> list[dg.AssetCheckResult]:
    """One result per (asset, check): passed only if every batch passed; the failed batches and their metadata named."""
    grouped: dict[tuple[Any, str], list[tuple[str, dg.AssetCheckResult]]] = {}
    for key, r in per_batch:
        grouped.setdefault((r.asset_key, r.check_name), []).append((key, r))
    merged = []
    for (asset_key, check_name), items in grouped.items():
        failed = [(k, r) for k, r in items if not r.passed]
        worst = next((r for _, r in failed if r.severity == dg.AssetCheckSeverity.ERROR), failed[0][1] if failed else None)
        metadata: dict[str, Any] = {"batches": len(items), "batches_failed": len(failed)}
        if failed:
            metadata["failed_batches"] = dg.MetadataValue.json([k for k, _ in failed])
            metadata.update({f"{failed[0][0]}: {name}": value for name, value in (failed[0][1].metadata or {}).items()})
        merged.append(dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=check_name,
            passed=not failed,
            severity=worst.severity if worst is not None else items[0][1].severity,
            metadata=metadata,
            description=(f"failed for {len(failed)} of {len(items)} batches: {', '.join(k for k, _ in failed[:10])}"
                         if failed else f"passed for all {len(items)} batches"),
        ))
    return merged


def each_batch(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator (under `@dg.asset` / `@dg.multi_asset`) for a per-batch asset body that reads
    `context.partition_key`: see the module docstring."""

    @functools.wraps(fn)
    def body(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Iterator[Any]:
        keys = list(context.partition_keys)
        if len(keys) == 1:
            yield from _results(fn(context, *args, **kwargs))
            return
        checks: list[tuple[str, dg.AssetCheckResult]] = []
        assets: list[Any] = []
        for n, key in enumerate(keys, 1):
            context.log.info(f"batch {key} ({n} of {len(keys)} in this run)")
            for r in _results(fn(_OneBatch(context, key), *args, **kwargs)):
                asset_key = r.asset_key
                if asset_key is None:
                    asset_key = context.asset_key
                if asset_key not in assets:
                    assets.append(asset_key)
                if r.metadata:
                    context.add_asset_metadata(dict(r.metadata), asset_key=asset_key, partition_key=key)
                checks.extend((key, c) for c in (r.check_results or []))
        for asset_key in assets:
            yield dg.MaterializeResult(asset_key=asset_key, metadata={"batches_in_run": len(keys)})
        yield from _merged_checks(checks)

    return body
