"""Pandera schemas of the warehouse tables: the contract each asset's output must meet.

The Dagster layer runs them as asset checks (blocking where a broken table would corrupt what comes after).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

from danqing_assets.lib.stages import FETCH, LEDGER_STAGES

PAIR_ID = r"^[0-9a-f]{16}$"
HTTP_URL = r"^https?://"
SNAKE = r"^[a-z][a-z0-9_]*$"
SHA256 = r"^[0-9a-f]{64}$"


class WarcFiles(pa.DataFrameModel):
    snapshot: str
    uri: str = pa.Field(unique=True)
    name: str = pa.Field(unique=True)
    bytes: int = pa.Field(nullable=True, ge=0)

    class Config:
        strict = False


class RawPairs(pa.DataFrameModel):
    pair_id: str = pa.Field(unique=True, str_matches=PAIR_ID)
    snapshot: str
    warc_file: str
    warc_offset: int = pa.Field(ge=0)
    page_url: str
    domain: str = pa.Field(nullable=True)
    image_url: str = pa.Field(str_matches=HTTP_URL)
    caption: str
    page_language: str

    class Config:
        strict = False


class ImageCaptures(pa.DataFrameModel):
    snapshot: str
    url: str
    warc_file: str
    warc_offset: int = pa.Field(ge=0)

    class Config:
        strict = False


class SourceScores(pa.DataFrameModel):
    snapshot: str
    pair_id: str = pa.Field(unique=True, str_matches=PAIR_ID)
    caption_md5: str = pa.Field(nullable=True, str_matches=r"^[0-9a-f]{32}$")
    blacklisted_by: str = pa.Field(nullable=True)
    word_count: int = pa.Field(ge=0)
    unsafe_score: float = pa.Field(ge=0, le=1)
    unsafe_category: str = pa.Field(nullable=True)
    unsafe_term: str = pa.Field(nullable=True)
    caption_norm: str
    noun_count: int = pa.Field(ge=0)  # of the stage-2 cleaned caption; text_scores reuses it (one jieba pass)

    class Config:
        strict = False


class SourceSelectedPairs(RawPairs):
    word_count: int = pa.Field(ge=0)
    caption_norm: str = pa.Field(str_length={"min_value": 1})


class TextScores(pa.DataFrameModel):
    snapshot: str
    pair_id: str = pa.Field(unique=True, str_matches=PAIR_ID)
    caption_md5: str = pa.Field(str_matches=r"^[0-9a-f]{32}$")
    caption_t2s: str
    caption_clean: str
    han_share: float = pa.Field(ge=0, le=1)
    language: str
    noun_count: int = pa.Field(ge=0)
    unk_count: int = pa.Field(ge=0)
    entropy: float = pa.Field(ge=0)
    sensitive_hits: int = pa.Field(ge=0)
    sensitive_score: float = pa.Field(ge=0, le=1)
    sensitive_category: str = pa.Field(nullable=True)

    class Config:
        strict = False


class TextRefinedPairs(SourceSelectedPairs):
    caption_clean: str = pa.Field(str_length={"min_value": 1})
    noun_count: int = pa.Field(ge=1)


class FetchedImages(pa.DataFrameModel):
    snapshot: str
    pair_id: str = pa.Field(unique=True, str_matches=PAIR_ID)
    image_url: str
    image_sha256: str = pa.Field(nullable=True, str_matches=SHA256)
    status: str = pa.Field(isin=["ok", "error"])
    source: str = pa.Field(isin=["warc", "http", "none"])
    reason: str = pa.Field(nullable=True, isin=list(FETCH.reasons))

    class Config:
        strict = False

    @pa.dataframe_check
    def ok_rows_have_an_image(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("status") != "ok")
            | (pl.col("image_sha256").is_not_null() & (pl.col("width") > 0) & (pl.col("height") > 0))
        )

    @pa.dataframe_check
    def error_rows_have_a_reason(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("status") == "ok") | pl.col("reason").is_not_null())


class ImageScores(pa.DataFrameModel):
    snapshot: str
    image_sha256: str = pa.Field(unique=True, str_matches=SHA256)
    width: int = pa.Field(nullable=True, gt=0)
    height: int = pa.Field(nullable=True, gt=0)
    grey_std: float = pa.Field(nullable=True, ge=0)
    entropy_bits: float = pa.Field(nullable=True, ge=0, le=8)
    phash: str = pa.Field(nullable=True, str_matches=r"^[0-9a-f]{16}$")
    nsfw_scorer: str = pa.Field(nullable=True)
    nsfw_score: float = pa.Field(nullable=True, ge=0, le=1)
    text_heaviness: float = pa.Field(nullable=True, ge=0, le=1)
    text_area_share: float = pa.Field(nullable=True, ge=0, le=1)

    class Config:
        strict = False


class ImageEmbeddings(pa.DataFrameModel):
    snapshot: str
    image_sha256: str = pa.Field(unique=True, str_matches=SHA256)
    model: str
    dedup_descriptor: str = pa.Field(nullable=True)
    dedup_max_distance: float = pa.Field(nullable=True, gt=0, lt=2)

    class Config:
        strict = False


class ImageClusters(pa.DataFrameModel):
    snapshot: str
    image_sha256: str = pa.Field(unique=True, str_matches=SHA256)
    cluster_id: str = pa.Field(str_matches=SHA256)
    is_representative: bool

    class Config:
        strict = False


class CrossModalScores(pa.DataFrameModel):
    snapshot: str
    pair_id: str = pa.Field(unique=True, str_matches=PAIR_ID)
    image_sha256: str = pa.Field(str_matches=SHA256)
    model: str
    similarity_scale: str
    similarity: float = pa.Field(nullable=True, ge=-1.0001, le=1.0001)
    text_heaviness: float = pa.Field(nullable=True, ge=0, le=1)

    class Config:
        strict = False


class AlignedPairs(SourceSelectedPairs):
    similarity: float = pa.Field(ge=-1.0001, le=1.0001)
    text_heaviness: float = pa.Field(ge=0, le=1)


class Rejections(pa.DataFrameModel):
    snapshot: str
    pair_id: str = pa.Field(unique=True, str_matches=PAIR_ID)
    stage: str = pa.Field(isin=list(LEDGER_STAGES))
    reason: str = pa.Field(str_matches=SNAKE)
    detail: str = pa.Field(nullable=True)

    class Config:
        strict = True


@dataclass
class ValidationOutcome:
    passed: bool
    failures: int
    summary: str  # markdown: the first failure cases, grouped by column and check


def validate(schema: type[pa.DataFrameModel], df: pl.DataFrame, *, max_cases: int = 10) -> ValidationOutcome:
    """Validate lazily (all errors at once) and describe the failures instead of raising."""
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        lines = ["| column | check | failure case |", "|---|---|---|"]
        for row in cases.head(max_cases).iter_rows(named=True):
            lines.append(f"| {row.get('column')} | {row.get('check')} | {str(row.get('failure_case'))[:80]} |")
        return ValidationOutcome(False, cases.height, "\n".join(lines))
    except pa.errors.SchemaError as exc:  # e.g. a missing column
        return ValidationOutcome(False, 1, str(exc)[:500])
    return ValidationOutcome(True, 0, "")
