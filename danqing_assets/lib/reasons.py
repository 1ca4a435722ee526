"""Stable stage and reason names: the vocabulary shared by the filters, the `rejected_pairs` ledger and `truth.parquet`.

Every dropped pair is recorded with one `stage` and one `reason` named here. Names are snake_case and never change
meaning once released: downstream tooling (dashboards, calibration notebooks) groups by them. Which stage uses which
reasons, and in which decision order, is said once, in `danqing_assets/lib/stages.py`: a pair that breaks several
rules is recorded under the first rule that rejects it, in the order the stages run and, inside a stage, in the order
its registry entry lists its reasons.
"""

from __future__ import annotations

import re

KEEP = "keep"

# Stage names, in pipeline order.
SOURCE = "source"  # stage 1: data source selection
TEXT = "text"  # stage 2: text refinement
FETCH = "fetch"  # image acquisition
IMAGE = "image"  # stage 3: visual diversification
CROSS_MODAL = "cross_modal"  # stage 4: cross-modal band
CROSS_BATCH = "cross_batch"  # stage 4: cross-batch merge and dedup


# Any scored stage: its score row is missing (stale scores after an upstream re-run), NULL or NaN. Decisions fail
# closed: a pair is never kept unscreened.
UNSCORED = "unscored"

# Stage 1.
NOT_CHINESE_PAGE = "not_chinese_page"  # CC language list lacks `zho` (or, unlabelled, detection says not Chinese)
BLACKLISTED_DOMAIN = "blacklisted_domain"  # page host is, or is a subdomain of, a blacklisted domain
CAPTION_MISSING = "caption_missing"  # no alt text at all (empty or whitespace only)
CAPTION_TOO_SHORT = "caption_too_short"  # fewer than min_words jieba words (default 5)
CAPTION_TOO_LONG = "caption_too_long"  # more than max_words jieba words (default 60)
UNSAFE_TEXT = "unsafe_text"  # the text-safety classifier (default: shipped lexicon) flags the caption
DUPLICATE_PAIR = "duplicate_pair"  # same (image_url, normalised caption) as an earlier pair of the snapshot


# Stage 2.
NOT_CHINESE_CAPTION = "not_chinese_caption"  # caption itself is not Chinese (Han share / language ID)
NO_NOUN = "no_noun"  # no noun under jieba POS tags
TOO_MANY_UNK = "too_many_unk"  # more than 5 [UNK] tokens under a Chinese BERT vocabulary
LOW_INFORMATION = "low_information"  # information-density entropy below threshold (repetition, emoji, symbols)
SENSITIVE_TEXT = "sensitive_text"  # hit in the sensitive / NSFW lexicon
NEAR_DUPLICATE_CAPTION = "near_duplicate_caption"  # MinHash-LSH near duplicate of a kept caption


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
# The worker process died (a segfault in a decoder, the OOM killer) while it held the URL, and again when the URL was
# retried alone in a fresh worker. Also the kind of a WARC file error when extraction's worker died on both paths.
INTERNAL_ERROR = "internal_error"


# Stage 3.
TOO_SMALL = "too_small"  # shortest edge <= 100 px
EXTREME_ASPECT = "extreme_aspect"  # aspect ratio outside 1:3 .. 3:1
FLAT_IMAGE = "flat_image"  # grey-level standard deviation < 2
BLURRY_IMAGE = "blurry_image"  # Laplacian variance below threshold
LOW_ENTROPY_IMAGE = "low_entropy_image"  # grey histogram entropy < 3 bits
NSFW_IMAGE = "nsfw_image"
DUPLICATE_IMAGE = "duplicate_image"  # same sha256 as a kept image
NEAR_DUPLICATE_IMAGE = "near_duplicate_image"  # pHash within Hamming distance of a kept image
SEMANTIC_DUPLICATE = "semantic_duplicate"  # embedding cosine distance <= 0.1 to its cluster's representative


# Stage 4.
LOW_SIMILARITY = "low_similarity"  # image-text similarity below the band: weak semantic match
HIGH_SIMILARITY = "high_similarity"  # above the band: usually text-heavy (OCR) images
CROSS_BATCH_DUPLICATE = "cross_batch_duplicate"


_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def is_valid_reason(name: str) -> bool:
    """True for a stable snake_case reason name (custom plug-ins may add reasons of their own)."""
    return bool(_SNAKE.match(name))


