"""Stable stage and reason names: the vocabulary shared by the filters, the `rejected_pairs` ledger and `truth.parquet`.

Every dropped pair is recorded with one `stage` and one `reason` from this module. Names are snake_case and never
change meaning once released: downstream tooling (dashboards, calibration notebooks) groups by them. A pair that breaks
several rules is recorded under the first rule that rejects it, in the order the stages run and, inside a stage, in the
order each stage's tuple below lists its reasons.
"""

from __future__ import annotations

import re

KEEP = "keep"

# Stage names, in pipeline order.
SOURCE = "source"  # stage 1: data source selection
TEXT = "text"  # stage 2: text refinement
FETCH = "fetch"  # image acquisition
IMAGE = "image"  # stage 3: visual diversification
CROSS_MODAL = "cross_modal"  # stage 4: cross-modal band and cross-batch dedup

STAGES: tuple[str, ...] = (SOURCE, TEXT, FETCH, IMAGE, CROSS_MODAL)

# Stage 1, in decision order.
NOT_CHINESE_PAGE = "not_chinese_page"  # CC language list lacks `zho` (or, unlabelled, detection says not Chinese)
BLACKLISTED_DOMAIN = "blacklisted_domain"  # page host is, or is a subdomain of, a blacklisted domain
CAPTION_MISSING = "caption_missing"  # no alt text at all (empty or whitespace only)
CAPTION_TOO_SHORT = "caption_too_short"  # fewer than min_words jieba words (default 5)
CAPTION_TOO_LONG = "caption_too_long"  # more than max_words jieba words (default 60)
UNSAFE_TEXT = "unsafe_text"  # the text-safety classifier (default: shipped lexicon) flags the caption
DUPLICATE_PAIR = "duplicate_pair"  # same (image_url, normalised caption) as an earlier pair of the snapshot

SOURCE_REASONS: tuple[str, ...] = (
    NOT_CHINESE_PAGE,
    BLACKLISTED_DOMAIN,
    CAPTION_MISSING,
    CAPTION_TOO_SHORT,
    CAPTION_TOO_LONG,
    UNSAFE_TEXT,
    DUPLICATE_PAIR,
)

# Stage 2, in decision order.
NOT_CHINESE_CAPTION = "not_chinese_caption"  # caption itself is not Chinese (Han share / language ID)
NO_NOUN = "no_noun"  # no noun under jieba POS tags
TOO_MANY_UNK = "too_many_unk"  # more than 5 [UNK] tokens under a Chinese BERT vocabulary
LOW_INFORMATION = "low_information"  # information-density entropy below threshold (repetition, emoji, symbols)
SENSITIVE_TEXT = "sensitive_text"  # hit in the sensitive / NSFW lexicon
NEAR_DUPLICATE_CAPTION = "near_duplicate_caption"  # MinHash-LSH near duplicate of a kept caption

TEXT_REASONS: tuple[str, ...] = (
    NOT_CHINESE_CAPTION,
    NO_NOUN,
    TOO_MANY_UNK,
    LOW_INFORMATION,
    SENSITIVE_TEXT,
    NEAR_DUPLICATE_CAPTION,
)

# Image acquisition: one reason per error class.
DNS_ERROR = "dns_error"
CONNECTION_ERROR = "connection_error"
TIMEOUT = "timeout"
HTTP_NOT_FOUND = "http_not_found"  # 404 / 410
HTTP_CLIENT_ERROR = "http_client_error"  # other 4xx
HTTP_SERVER_ERROR = "http_server_error"  # 5xx after retries
RATE_LIMITED = "rate_limited"  # 429 after retries
TOO_MANY_REDIRECTS = "too_many_redirects"
BLOCKED_ADDRESS = "blocked_address"  # host resolves to a private / loopback / link-local / reserved address
ROBOTS_DISALLOWED = "robots_disallowed"
OPTOUT_HEADER = "optout_header"  # X-Robots-Tag noai / noimageai
TOO_LARGE = "too_large"  # body over the size cap
NOT_AN_IMAGE = "not_an_image"  # neither content type nor magic bytes say image
DECOMPRESSION_BOMB = "decompression_bomb"  # more pixels than the configured cap
DECODE_ERROR = "decode_error"  # truncated or undecodable
INVALID_URL = "invalid_url"

FETCH_REASONS: tuple[str, ...] = (
    INVALID_URL,
    BLOCKED_ADDRESS,
    ROBOTS_DISALLOWED,
    DNS_ERROR,
    CONNECTION_ERROR,
    TIMEOUT,
    TOO_MANY_REDIRECTS,
    HTTP_NOT_FOUND,
    RATE_LIMITED,
    HTTP_CLIENT_ERROR,
    HTTP_SERVER_ERROR,
    OPTOUT_HEADER,
    TOO_LARGE,
    NOT_AN_IMAGE,
    DECOMPRESSION_BOMB,
    DECODE_ERROR,
)

# Stage 3, in decision order.
TOO_SMALL = "too_small"  # shortest edge <= 100 px
EXTREME_ASPECT = "extreme_aspect"  # aspect ratio outside 1:3 .. 3:1
FLAT_IMAGE = "flat_image"  # grey-level standard deviation < 2
BLURRY_IMAGE = "blurry_image"  # Laplacian variance below threshold
LOW_ENTROPY_IMAGE = "low_entropy_image"  # grey histogram entropy < 3 bits
NSFW_IMAGE = "nsfw_image"
DUPLICATE_IMAGE = "duplicate_image"  # same sha256 as a kept image
NEAR_DUPLICATE_IMAGE = "near_duplicate_image"  # pHash within Hamming distance of a kept image
SEMANTIC_DUPLICATE = "semantic_duplicate"  # embedding cosine distance <= 0.1 to its cluster's representative

IMAGE_REASONS: tuple[str, ...] = (
    TOO_SMALL,
    EXTREME_ASPECT,
    FLAT_IMAGE,
    BLURRY_IMAGE,
    LOW_ENTROPY_IMAGE,
    NSFW_IMAGE,
    DUPLICATE_IMAGE,
    NEAR_DUPLICATE_IMAGE,
    SEMANTIC_DUPLICATE,
)

# Stage 4.
LOW_SIMILARITY = "low_similarity"  # image-text similarity below the band: weak semantic match
HIGH_SIMILARITY = "high_similarity"  # above the band: usually text-heavy (OCR) images
CROSS_BATCH_DUPLICATE = "cross_batch_duplicate"

CROSS_MODAL_REASONS: tuple[str, ...] = (LOW_SIMILARITY, HIGH_SIMILARITY, CROSS_BATCH_DUPLICATE)

REASONS_BY_STAGE: dict[str, tuple[str, ...]] = {
    SOURCE: SOURCE_REASONS,
    TEXT: TEXT_REASONS,
    FETCH: FETCH_REASONS,
    IMAGE: IMAGE_REASONS,
    CROSS_MODAL: CROSS_MODAL_REASONS,
}

ALL_REASONS: frozenset[str] = frozenset(r for rs in REASONS_BY_STAGE.values() for r in rs)

_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def is_valid_reason(name: str) -> bool:
    """True for a stable snake_case reason name (custom plug-ins may add reasons of their own)."""
    return bool(_SNAKE.match(name))


def stage_of(reason: str) -> str:
    """The stage a built-in reason belongs to."""
    for stage, reasons in REASONS_BY_STAGE.items():
        if reason in reasons:
            return stage
    raise KeyError(f"unknown reason {reason!r}")
