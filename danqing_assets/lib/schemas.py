"""Pandera schemas of the warehouse tables: the contract each asset's output must meet.

The Dagster layer runs them as asset checks (blocking where a broken table would corrupt what comes after).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

from danqing_assets.lib.reasons import STAGES

PAIR_ID = r"^[0-9a-f]{16}$"
HTTP_URL = r"^https?://"
SNAKE = r"^[a-z][a-z0-9_]*$"


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


class SourceSelectedPairs(RawPairs):
    word_count: int = pa.Field(ge=0)
    caption_norm: str = pa.Field(str_length={"min_value": 1})


class Rejections(pa.DataFrameModel):
    snapshot: str
    pair_id: str = pa.Field(unique=True, str_matches=PAIR_ID)
    stage: str = pa.Field(isin=list(STAGES))
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
