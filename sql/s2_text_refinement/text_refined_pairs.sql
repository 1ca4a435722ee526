-- Stage 2 (text refinement), rule part: decide every stage-1 survivor from its stored text scores.
-- Input view `scored`: source_selected_pairs LEFT JOINed with text_scores on pair_id (a pair without a score row has
-- NULL scores).
-- Chinese check: the caption's language is Chinese (lib/text.detect_language counts a Han character and an English
-- word as one unit each, so "Nike Air Max 90 男鞋" is zho) and it has at least a minimal share of Han characters.
-- Fails closed: no score row, a NULL or NaN score, or scores of another caption (stale text_scores after raw_pairs
-- was re-extracted: `caption_md5` differs) reject the pair as `unscored`; nothing passes unscreened.
-- Sensitive text: the text-safety score of the stage-2 categories (suggestive, spam; lib/safety.py) at or above
-- $min_sensitive_score.
-- Output, like every decision query: pair_id, reason (NULL = passes every rule), detail. Near-duplicate captions are
-- removed afterwards among the rows that pass (MinHash LSH in Python), so a rejected caption never decides which copy
-- survives.
WITH checked AS (
    SELECT
        *,
        concat_ws(',',
            CASE WHEN caption_md5 IS NULL THEN 'no score row' END,
            CASE WHEN caption_md5 IS NOT NULL AND caption_md5 <> md5(caption) THEN 'stale (caption changed)' END,
            CASE WHEN language IS NULL THEN 'language' END,
            CASE WHEN han_share IS NULL OR isnan(han_share) THEN 'han_share' END,
            CASE WHEN noun_count IS NULL THEN 'noun_count' END,
            CASE WHEN unk_count IS NULL THEN 'unk_count' END,
            CASE WHEN entropy IS NULL OR isnan(entropy) THEN 'entropy' END,
            CASE WHEN sensitive_score IS NULL OR isnan(sensitive_score) THEN 'sensitive_score' END
        ) AS missing
    FROM scored
)
SELECT
    pair_id,
    CASE
        WHEN missing <> '' THEN 'unscored'
        WHEN language <> 'zho' OR han_share < $min_han_share THEN 'not_chinese_caption'
        WHEN noun_count < $min_nouns THEN 'no_noun'
        WHEN unk_count > $max_unk THEN 'too_many_unk'
        WHEN entropy < $min_entropy THEN 'low_information'
        WHEN sensitive_score >= $min_sensitive_score THEN 'sensitive_text'
    END AS reason,
    CASE
        WHEN missing <> '' THEN 'missing score: ' || missing
        WHEN language <> 'zho' OR han_share < $min_han_share
            THEN 'han_share=' || round(han_share, 3) || ' language=' || language
        WHEN noun_count < $min_nouns THEN 'nouns=' || noun_count
        WHEN unk_count > $max_unk THEN 'unk=' || unk_count
        WHEN entropy < $min_entropy THEN 'entropy=' || round(entropy, 6)
        WHEN sensitive_score >= $min_sensitive_score
            THEN coalesce(sensitive_category, 'sensitive') || ' score=' || round(sensitive_score, 3) || ' ' || sensitive_terms
    END AS detail
FROM checked
ORDER BY warc_file, warc_offset, img_index
