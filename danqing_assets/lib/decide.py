"""The keep/drop decision of each filtering stage, from stored scores: one function per stage, used by the stage's
asset and by the what-if funnel (`danqing funnel NAME --set ...`), so both always decide the same way.

Each function takes the stage's input rows joined with their stored scores and the thresholds (a mapping with the
stage Config's field names), and returns the input rows with `reason` (NULL = kept) and `detail`. Rules are SQL
(`sql/<group>/<asset>.sql`, returning `pair_id, reason, detail`); redundancy among the rows that pass the rules is
removed here afterwards (caption MinHash near-duplicates, image pHash / embedding clusters), so a rejected row never
decides which copy survives.

Stages 1 and 2 decide out of core (`source_decided_view`, `text_decided_view`): their SQL runs on a DuckDB
connection with a memory limit over the Parquet files themselves, and its answer is streamed to a scratch Parquet file;
the stage (or the what-if) then reads the returned view without ever holding the partition
(`finish_stage_out_of_core`). Stages 3 and 4 decide on polars frames of their (much smaller) inputs (`decide_image`,
`decide_aligned`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from danqing_assets.lib import reasons
from danqing_assets.lib.sql import checked_sql, parquet_literal, release_memory, run_sql
from danqing_assets.lib.stages import IMAGE, SOURCE, TEXT

CRAWL_ORDER = ["warc_file", "warc_offset", "img_index"]


def caption_md5(captions: Sequence[str | None]) -> list[str | None]:
    """md5 of each caption's UTF-8 bytes (what DuckDB's md5() gives): scores carry it so stale ones are detected."""
    return [None if c is None else hashlib.md5(c.encode("utf-8")).hexdigest() for c in captions]


def _pick(params: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"missing thresholds {missing}")
    return {n: params[n] for n in names}


SOURCE_PARAMS = ("require_chinese_page", "min_words", "max_words", "min_unsafe_score")
SOURCE_DROP_COLUMNS = ("blacklisted_by", "unsafe_score", "unsafe_category", "unsafe_term", "caption_md5", "noun_count")
"""Score columns of source_scores not carried into source_selected_pairs (`noun_count` is read by text_scores)."""


def source_kept_columns(raw_columns: Sequence[str], score_columns: Sequence[str]) -> list[str]:
    """The columns of `source_selected_pairs`: every raw_pairs column, then the stage-1 scores it carries."""
    dropped = {"snapshot", "pair_id", *SOURCE_DROP_COLUMNS}
    return [*raw_columns, *[c for c in score_columns if c not in dropped]]


TEXT_PARAMS = ("min_han_share", "min_nouns", "max_unk", "min_entropy", "min_sensitive_score")


def _query_to_parquet(con: Any, name: str, params: Mapping[str, Any], out: Path, *, batch_rows: int = 100_000) -> None:
    """Run `sql/<name>` on `con` and stream its answer into the Parquet file `out` (never held whole)."""
    import pyarrow.parquet as pq

    text, checked = checked_sql(name, dict(params))
    reader = con.execute(text, checked).fetch_record_batch(batch_rows)
    with pq.ParquetWriter(out, reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)


def _aligned(con: Any, left: Path, scores: Path) -> bool:
    """Whether `scores` holds exactly the pair_ids of `left`, row for row (what the scoring steps write: they read
    their input in file order and write each chunk in that order). A cheap streaming check: two pair_id columns."""
    mismatched = con.execute(f"""
        SELECT count(*) FILTER (WHERE l.pair_id IS DISTINCT FROM s.pair_id)
        FROM (SELECT pair_id FROM read_parquet({parquet_literal(left)})) l
        POSITIONAL JOIN (SELECT pair_id FROM read_parquet({parquet_literal(scores)})) s
    """).fetchone()[0]
    return mismatched == 0


def _scored_view(con: Any, left: Path, scores: Path, scratch: Path) -> bool:
    """View `scored`: the stage's input rows (with their file order as `_row`) LEFT JOIN their stored scores.

    When the score file is aligned with the input row for row (the normal case, `_aligned`), the join is positional:
    the two files are read side by side and nothing is held. Otherwise (scores written by other code, rows missing or
    extra, the what-if's stage-1 survivors) it is a hash join on pair_id, done in parts of at most `_JOIN_PART_ROWS`
    score rows split by the hash of pair_id (a grace hash join: each part's build side fits DuckDB's memory limit; one
    join of 4.2 M score rows ran out of 512 MB at 5 M pairs) and written to files in `scratch`, with insertion order
    off. Both give the same rows; returns whether the view is positional (then its rows come in `left`'s file order)."""
    aligned = _aligned(con, left, scores)
    select = "SELECT l.* EXCLUDE (file_row_number), s.* EXCLUDE (snapshot, pair_id), l.file_row_number AS _row"
    if aligned:
        con.execute(f"CREATE OR REPLACE TEMP VIEW scored AS {select} "
                    f"FROM read_parquet({parquet_literal(left)}, file_row_number = true) l "
                    f"POSITIONAL JOIN read_parquet({parquet_literal(scores)}) s")
        return True
    # nothing downstream of an unaligned join relies on file order (joins by pair_id, explicit ORDER BY)
    con.execute("SET preserve_insertion_order = false")
    rows = con.execute(f"SELECT count(*) FROM read_parquet({parquet_literal(scores)})").fetchone()[0]
    parts = max(1, -(-rows // _JOIN_PART_ROWS))
    folder = scratch / f"scored_{uuid.uuid4().hex}"  # one per call: the what-if joins twice in one scratch
    folder.mkdir()
    for k in range(parts):
        where = f"WHERE hash(pair_id) % {parts} = {k}" if parts > 1 else ""
        con.execute(f"""
            COPY ({select}
                  FROM (SELECT * FROM read_parquet({parquet_literal(left)}, file_row_number = true) {where}) l
                  LEFT JOIN (SELECT * FROM read_parquet({parquet_literal(scores)}) {where}) s ON l.pair_id = s.pair_id)
            TO {parquet_literal(folder / f"part-{k}.parquet")} (FORMAT PARQUET)
        """)
    con.execute(f"CREATE OR REPLACE TEMP VIEW scored AS SELECT * FROM read_parquet({parquet_literal(folder / '*.parquet')})")
    return False


_JOIN_PART_ROWS = 500_000
"""Score rows per part of an unaligned join (the what-if at 5 M pairs joined 4.3 M text scores in 9 parts within 512 MB,
where one join ran out of memory)."""


def source_decided_view(con: Any, raw: Path, scores: Path, params: Mapping[str, Any], scratch: Path) -> str:
    """Stage 1 out of core: `raw_pairs` LEFT JOIN `source_scores`, the SQL decision
    written to `scratch`; returns the name of a view of every input row with its scores, `reason`, `detail` and
    `_row` (its raw_pairs order)."""
    _scored_view(con, raw, scores, scratch)
    decision = scratch / "source_decision.parquet"
    _query_to_parquet(con, SOURCE.sql[0], _pick(params, SOURCE_PARAMS), decision)
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW decided AS
        SELECT s.*, d.reason, d.detail FROM scored s JOIN read_parquet({parquet_literal(decision)}) d ON s.pair_id = d.pair_id
    """)
    return "decided"


def text_decided_view(con: Any, pairs: Path, scores: Path, params: Mapping[str, Any],
                      scratch: Path) -> tuple[str, int, bool]:
    """Stage 2 out of core: the SQL rules written to `scratch`, then caption near-duplicates
    among the passing rows in crawl order (only their pair_id and caption_clean are read). Returns the decided view's
    name (input rows with scores, `reason`, `detail`, `_row`), the number of rows that passed the rules, and whether
    the view reads the input in its file order and that order is crawl order for every passing row (then the kept rows
    need no sort: stage 1 writes its table in crawl order)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from danqing_assets.lib.memory import trim
    from danqing_assets.lib.text.batch import default_workers
    from danqing_assets.lib.text_dedup import near_duplicate_reps

    in_file_order = _scored_view(con, pairs, scores, scratch)
    rules = scratch / "text_rules.parquet"
    _query_to_parquet(con, TEXT.sql[0], _pick(params, TEXT_PARAMS), rules)
    # the rules come out in crawl order, the order source_selected_pairs is written in: when `scored` reads the pairs
    # in their file order too, rules are joined to their rows by position (nothing held; a hash join of 4.2 M
    # decisions plus the sort below ran out of 512 MB), else by pair_id
    positional = in_file_order and _aligned(con, pairs, rules)
    if positional:
        join = f"POSITIONAL JOIN read_parquet({parquet_literal(rules)}) r"
    else:
        join = f"JOIN read_parquet({parquet_literal(rules)}) r ON s.pair_id = r.pair_id"
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW ruled AS
        SELECT s.*, r.reason AS rule_reason, r.detail AS rule_detail
        FROM scored s {join}
    """)
    dups = scratch / "text_near_duplicates.parquet"
    passing = con.execute("SELECT count(*) FROM ruled WHERE rule_reason IS NULL").fetchone()[0]
    dup_ids = dup_detail = pa.array([], type=pa.string())
    dup_at = np.zeros(0, dtype=np.int64)  # the input rows (`_row`) of the duplicates, in the order of dup_ids
    crawl_ordered = False  # the passing rows' file order is their crawl order
    if params.get("dedup_captions", True) and passing:
        # the passing captions in crawl order go to a scratch file (DuckDB sorts out of core); the index streams the
        # caption column from it a row group at a time (the column itself is never held: at 4.2 M captions reading it
        # whole cost ~1.2 GB), and the pair ids are read back once it is done
        ordered = scratch / "text_passing.parquet"
        con.execute("COPY (SELECT pair_id, caption_clean, _row FROM ruled WHERE rule_reason IS NULL "
                    "ORDER BY warc_file, warc_offset, img_index, _row) "
                    f"TO {parquet_literal(ordered)} (FORMAT PARQUET, ROW_GROUP_SIZE 65536)")
        if params.get("memory_limit_mb"):
            release_memory(con, params["memory_limit_mb"])  # the sort's cached memory, before the index is built
        reps = near_duplicate_reps(_ParquetStrings(ordered, "caption_clean"), threshold=params["near_duplicate_threshold"],
                                   ngram=params["near_duplicate_ngram"],
                                   one_edit_min_chars=params["near_duplicate_one_edit_min_chars"], spill_dir=scratch,
                                   workers=params.get("workers") or default_workers())
        dup_rows = np.flatnonzero(reps != np.arange(len(reps)))
        back = pq.read_table(ordered, columns=["pair_id", "_row"])
        ids, rows = back.column("pair_id"), back.column("_row").to_numpy()
        del back
        dup_ids = ids.take(pa.array(dup_rows)).combine_chunks()
        dup_detail = pc.binary_join_element_wise(
            "near_duplicate_of=", ids.take(pa.array(reps[dup_rows])).combine_chunks(), "").cast(pa.string())
        crawl_ordered = bool(np.all(rows[1:] > rows[:-1]))
        dup_at = rows[dup_rows]
        del reps, ids, rows, dup_rows
        trim()  # the index's freed memory back to the OS before DuckDB's queries grow on top of it
    if positional:
        # `ruled` is in the input file's order: the near-duplicate details go in one column aligned with it (NULL
        # where none), joined by position; a hash join of millions of duplicates and the kept table's sort after it
        # ran out of 512 MB at 5 M pairs
        n_rows = con.execute(f"SELECT count(*) FROM read_parquet({parquet_literal(pairs)})").fetchone()[0]
        order = np.argsort(dup_at, kind="stable")
        mask = np.zeros(n_rows, dtype=bool)
        mask[dup_at] = True
        aligned = pc.replace_with_mask(pa.nulls(n_rows, pa.string()), pa.array(mask),
                                       dup_detail.take(pa.array(order)))
        pq.write_table(pa.table({"nd_detail": aligned}), dups)
        del aligned, mask, order, dup_ids, dup_detail
        join, hit, found = f"POSITIONAL JOIN read_parquet({parquet_literal(dups)}) d", "d.nd_detail IS NOT NULL", "d.nd_detail"
    else:
        pq.write_table(pa.table({"pair_id": dup_ids.cast(pa.string()), "detail": dup_detail}), dups)
        del dup_ids, dup_detail
        join = f"LEFT JOIN read_parquet({parquet_literal(dups)}) d ON r.pair_id = d.pair_id"
        hit, found = "d.pair_id IS NOT NULL", "d.detail"
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW decided AS
        SELECT r.* EXCLUDE (rule_reason, rule_detail),
               CASE WHEN {hit} THEN '{reasons.NEAR_DUPLICATE_CAPTION}' ELSE r.rule_reason END AS reason,
               CASE WHEN {hit} THEN {found} ELSE r.rule_detail END AS detail
        FROM ruled r {join}
    """)
    return "decided", int(passing), positional and crawl_ordered


class _ParquetStrings(Sequence):
    """One string column of a Parquet file as a sequence that is only iterated, a batch at a time, from the file (the
    column is never held whole); its length comes from the file's footer."""

    def __init__(self, path: Path, column: str, batch_rows: int = 65_536) -> None:
        import pyarrow.parquet as pq

        self.path, self.column, self.batch_rows = path, column, batch_rows
        self.n = pq.ParquetFile(path).metadata.num_rows

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        raise TypeError("_ParquetStrings is read in order only (iter_blocks)")

    def __iter__(self) -> Any:
        for block in self.iter_blocks():
            yield from block

    def iter_blocks(self) -> Any:
        from danqing_assets.lib.warehouse import iter_parquet_tables

        for table in iter_parquet_tables(self.path, [self.column], self.batch_rows):
            yield table.column(0).to_pylist()


def parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


class DegenerateClusters(ValueError):
    """One redundancy cluster holds an implausible share of a partition's images: the embedding model (or the
    threshold) merges distinct images. Deciding anyway would drop most of the data as duplicates."""


MIN_IMAGES_FOR_CLUSTER_CHECK = 50


def require_text_heaviness(scores: pl.DataFrame) -> None:
    """A ValueError for an `image_scores` table written before it held text heaviness (stages 3 and 4 read it)."""
    if "text_heaviness" not in scores.columns:
        raise ValueError("image_scores predates the text_heaviness column: re-materialize image_scores")


def dedup_inputs(
    emb_table: pl.DataFrame | None, max_distance: float | None
) -> tuple[dict[str, Any] | None, float, str | None]:
    """What semantic (and cross-batch embedding) dedup compares, from an `image_embeddings` table: (image sha256 ->
    vector, or None without embeddings; the cosine distance to merge within; a description of the vectors).

    A checkpoint that declares a dedup descriptor (`lib.dedup_descriptor`; the table's `dedup_embedding` column) is
    compared on it, within `max_distance` when set, else within the distance its card records; otherwise the CLIP
    embeddings are, within `max_distance`, default the paper's 0.1. A table mixing rows with and without descriptors
    (written by two models) is an error, never half-compared.
    """
    from danqing_assets.lib.clusters import DEFAULT_MAX_DISTANCE

    if emb_table is None or not emb_table.height:
        return None, max_distance if max_distance is not None else DEFAULT_MAX_DISTANCE, None
    shas = emb_table["image_sha256"].to_list()
    if "dedup_embedding" in emb_table.columns and emb_table["dedup_embedding"].null_count() < emb_table.height:
        if emb_table["dedup_embedding"].null_count() or emb_table["dedup_descriptor"].n_unique() != 1:
            raise ValueError("image_embeddings mixes rows with and without (or with different) dedup descriptors: "
                             "re-materialize image_embeddings with one model")
        stored = emb_table["dedup_max_distance"][0] if "dedup_max_distance" in emb_table.columns else None
        distance = max_distance if max_distance is not None else (
            float(stored) if stored is not None else DEFAULT_MAX_DISTANCE)
        return dict(zip(shas, emb_table["dedup_embedding"].to_list())), distance, str(emb_table["dedup_descriptor"][0])
    return (dict(zip(shas, emb_table["embedding"].to_list())),
            max_distance if max_distance is not None else DEFAULT_MAX_DISTANCE, "CLIP embedding")


def check_cluster_sizes(reps: np.ndarray, max_share: float, *, semantic: bool) -> None:
    """Fail when the largest cluster holds more than `max_share` of the distinct images (checked from 50 images on).

    A randomly initialised or undertrained CLIP maps distinct images to nearly the same embedding, so union-find at
    cosine distance 0.1 chains them into one cluster; a real crawl's largest near-duplicate cluster is a tiny share.
    """
    n = len(reps)
    if n < MIN_IMAGES_FOR_CLUSTER_CHECK or max_share >= 1.0:
        return
    largest = int(np.bincount(np.asarray(reps, dtype=np.int64)).max()) if n else 0
    if largest > max_share * n:
        hint = ("the embedding model looks degenerate (undertrained or random): use a trained checkpoint, or set "
                "semantic_dedup: false to run without semantic dedup" if semantic else
                "pHash merges distinct images: lower phash_max_hamming")
        raise DegenerateClusters(f"one redundancy cluster holds {largest} of {n} distinct images "
                                 f"({largest / n:.0%} > max_cluster_share {max_share:.0%}): {hint}")


IMAGE_RULE_PARAMS = ("min_shortest_edge", "max_aspect", "min_grey_std", "blur_measure", "min_blur_score",
                     "min_laplacian_var", "min_entropy_bits", "max_nsfw_score")


def decide_image(
    pairs: pl.DataFrame,
    fetched: pl.DataFrame,
    scores: pl.DataFrame,
    caption_entropy: pl.DataFrame,
    embeddings: Mapping[str, Sequence[float]] | None,
    params: Mapping[str, Any],
) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray | None]:
    """Stage 3: text-refined pairs with a fetched image, LEFT JOIN `image_scores` by sha256, the SQL rules, then one
    pair per redundancy cluster (exact sha256, pHash, embeddings; `lib.clusters.redundancy_clusters`).

    Returns (decided rows in stage-3 priority order, the clusters table per distinct passing image, the embedding
    matrix of those images in the same order or None)."""
    from danqing_assets.lib.clusters import redundancy_clusters

    require_text_heaviness(scores)
    scores = scores.drop("snapshot", strict=False).with_columns(pl.col("image_sha256").alias("scored_image"))
    scored = (
        pairs.join(fetched.select("pair_id", "image_sha256"), on="pair_id", how="inner")
        .join(scores, on="image_sha256", how="left")
        .join(caption_entropy, on="pair_id", how="left")
    )
    rules = run_sql(IMAGE.sql[0], tables={"scored": scored}, params=_pick(params, IMAGE_RULE_PARAMS))
    decided = scored.join(rules, on="pair_id", how="left")
    passing = decided.filter(pl.col("reason").is_null()).with_columns((pl.col("width") * pl.col("height")).alias("pixels"))
    if params.get("representative", "first_seen") == "first_seen":
        passing = passing.sort(CRAWL_ORDER)
    else:  # highest resolution, then the more informative caption, then crawl order
        passing = passing.sort(["pixels", "caption_entropy", *CRAWL_ORDER], descending=[True, True, False, False, False],
                               nulls_last=True)
    images = passing.unique("image_sha256", keep="first", maintain_order=True).select(
        "image_sha256", "phash", "text_heaviness")
    shas = images["image_sha256"].to_list()
    emb_matrix = semantic = None
    if params.get("semantic_dedup", True) and embeddings and shas:
        dim = len(next(iter(embeddings.values())))
        emb_matrix = np.array([embeddings.get(s) or [np.nan] * dim for s in shas], dtype=np.float32)
        semantic = emb_matrix
        limit = params.get("semantic_max_text_heaviness")
        if limit is not None:  # text-dominated images stay out of semantic merges (pHash and sha256 still apply)
            heavy = (images["text_heaviness"].fill_nan(None).fill_null(1.0) >= limit).to_numpy()
            if heavy.any():
                semantic = emb_matrix.copy()
                semantic[heavy] = np.nan
    reps, dup_reasons = redundancy_clusters(
        images["phash"].to_list(), semantic, phash_max_hamming=params["phash_max_hamming"],
        max_distance=params["semantic_max_distance"], near_duplicate=reasons.NEAR_DUPLICATE_IMAGE,
        semantic_duplicate=reasons.SEMANTIC_DUPLICATE,
    )
    check_cluster_sizes(reps, params.get("max_cluster_share", 1.0), semantic=emb_matrix is not None)
    clusters = pl.DataFrame(
        {"image_sha256": shas, "cluster_id": [shas[r] for r in reps],
         "is_representative": [int(r) == i for i, r in enumerate(reps)], "dup_reason": dup_reasons},
        schema={"image_sha256": pl.String, "cluster_id": pl.String, "is_representative": pl.Boolean,
                "dup_reason": pl.String},
    )
    # a pair is a duplicate when its image does not represent its cluster, or is a later pair of the same image
    ranked = passing.join(clusters.select("image_sha256", "cluster_id", "dup_reason"), on="image_sha256", how="left")
    ranked = ranked.with_columns(pl.int_range(pl.len()).over("image_sha256").alias("rank_in_image")).with_columns(
        pl.when(pl.col("rank_in_image") > 0).then(pl.lit(reasons.DUPLICATE_IMAGE)).otherwise(pl.col("dup_reason"))
        .alias("dup_reason")
    )
    dups = ranked.select("pair_id", "cluster_id", "dup_reason",
                         dup_detail=pl.concat_str([pl.lit("cluster="), pl.col("cluster_id")]))
    decided = decided.join(dups, on="pair_id", how="left").with_columns(
        pl.coalesce("reason", "dup_reason").alias("reason"),
        pl.when(pl.col("dup_reason").is_not_null()).then(pl.col("dup_detail")).otherwise(pl.col("detail")).alias("detail"),
    ).drop("dup_reason", "dup_detail")
    order = ranked.select("pair_id").with_row_index("_order")
    decided = decided.join(order, on="pair_id", how="left").sort("_order", nulls_last=True, maintain_order=True).drop("_order")
    return decided, clusters.drop("dup_reason"), emb_matrix


ALIGNED_PARAMS = ("band_mode", "min_similarity", "max_similarity", "low_quantile", "high_quantile",
                  "max_text_heaviness")


def decide_aligned(pairs: pl.DataFrame, scores: pl.DataFrame, params: Mapping[str, Any]) -> pl.DataFrame:
    """Stage 4, band: stage-3 survivors LEFT JOIN `cross_modal_scores`; see sql/s4_cross_modal/aligned_pairs.sql."""
    from danqing_assets.lib.stages import CROSS_MODAL

    scored = pairs.join(scores.drop("snapshot", "image_sha256", strict=False), on="pair_id", how="left")
    rules = run_sql(CROSS_MODAL.sql[0], tables={"scored": scored}, params=_pick(params, ALIGNED_PARAMS))
    return scored.join(rules, on="pair_id", how="left")
