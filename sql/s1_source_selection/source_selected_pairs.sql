-- Stage 1 (data source selection): decide every scored raw pair of one snapshot.
-- Input view `scored`: raw_pairs LEFT JOINed with source_scores on pair_id (a pair without a score row has NULL scores):
--   blacklisted_by (matched blacklist domain or NULL), word_count (jieba words), unsafe_score (text-safety score of
--   the stage-1 categories, 0..1), unsafe_category (its top category or NULL), unsafe_term (evidence or NULL),
--   caption_norm (normalised caption for exact dedup), caption_md5 (of the scored caption).
-- Output, like every decision query: pair_id, reason (NULL = kept), detail; one row per input pair. The first
-- failing rule wins, in the order of the stage's registry entry (lib/stages.py). Fails closed: a pair without a score
-- row, with a missing word count or safety score (NULL or NaN), or whose scores belong to another caption (stale source_scores:
-- caption_md5 differs) is `unscored`, never kept. Exact duplicates are ranked only among pairs that pass
-- every other rule, and the first pair in (warc_file, warc_offset, img_index) order keeps. The first pair of each
-- (image_url, caption_norm) is found by a window partitioned by that key (DuckDB >= 1.4 runs it out of core: 5 M pairs
-- in 512 MB), not by a grouped arg_min joined back (its string states do not spill: 5 M pairs did not fit in 1 GB).
WITH decided AS NOT MATERIALIZED (  -- inlined where used: never held as a whole

    SELECT
        *,
        CASE
            WHEN $require_chinese_page
                 AND NOT list_contains(string_split(lower(coalesce(page_language, '')), ','), 'zho')
                THEN 'not_chinese_page'
            WHEN blacklisted_by IS NOT NULL THEN 'blacklisted_domain'
            WHEN trim(coalesce(caption, '')) = '' THEN 'caption_missing'
            WHEN caption_md5 IS DISTINCT FROM md5(caption) OR word_count IS NULL OR unsafe_score IS NULL
                 OR isnan(unsafe_score) OR caption_norm IS NULL THEN 'unscored'
            WHEN word_count < $min_words THEN 'caption_too_short'
            WHEN word_count > $max_words THEN 'caption_too_long'
            WHEN unsafe_score >= $min_unsafe_score THEN 'unsafe_text'
        END AS rule_reason
    FROM scored
),
ranked AS (  -- dup_of: the first passing pair of the same (image_url, caption_norm); NULL for a rejected pair
    SELECT *, rule_reason IS NULL AND pair_id <> dup_of AS is_dup
    FROM (
        SELECT *,
               CASE WHEN rule_reason IS NULL THEN first_value(pair_id) OVER (
                   PARTITION BY rule_reason IS NULL, coalesce(image_url, ''), caption_norm
                   ORDER BY warc_file, warc_offset, img_index, pair_id) END AS dup_of
        FROM decided
    )
)
SELECT
    pair_id,
    CASE
        WHEN rule_reason IS NOT NULL THEN rule_reason
        WHEN is_dup THEN 'duplicate_pair'
    END AS reason,
    CASE
        WHEN rule_reason = 'not_chinese_page' THEN 'page_language=' || coalesce(page_language, '')
        WHEN rule_reason = 'blacklisted_domain' THEN 'domain=' || coalesce(domain, '') || ' listed=' || blacklisted_by
        WHEN rule_reason = 'unscored' THEN 'missing score: '
            || concat_ws(',', CASE WHEN caption_md5 IS NULL THEN 'no score row'
                                   WHEN caption_md5 <> md5(caption) THEN 'stale (caption changed)' END,
                              CASE WHEN word_count IS NULL THEN 'word_count' END,
                              CASE WHEN unsafe_score IS NULL OR isnan(unsafe_score) THEN 'unsafe_score' END,
                              CASE WHEN caption_norm IS NULL THEN 'caption_norm' END)
        WHEN rule_reason IN ('caption_too_short', 'caption_too_long') THEN 'words=' || word_count
        WHEN rule_reason = 'unsafe_text' THEN coalesce(unsafe_category, 'unsafe') || ' score=' || round(unsafe_score, 3)
            || ' ' || coalesce(unsafe_term, '')
        WHEN is_dup THEN 'duplicate_of=' || dup_of
    END AS detail
FROM ranked
ORDER BY warc_file, warc_offset, img_index
