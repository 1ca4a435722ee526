-- Stage 2 (text refinement), rule part: decide every stage-1 survivor from its stored text scores.
-- Input view `scored`: source_selected_pairs joined with text_scores on pair_id.
-- Chinese check: the caption's language is Chinese (lib/text.detect_language counts a Han character and an English
-- word as one unit each, so "Nike Air Max 90 男鞋" is zho) and it has at least a minimal share of Han characters.
-- Output: pair_id, rule_reason (NULL = passes every rule) and detail. Near-duplicate captions are removed afterwards
-- among the rows that pass (MinHash LSH in Python), so a rejected caption never decides which copy survives.
SELECT
    pair_id,
    CASE
        WHEN language <> 'zho' OR han_share < $min_han_share THEN 'not_chinese_caption'
        WHEN noun_count < $min_nouns THEN 'no_noun'
        WHEN unk_count > $max_unk THEN 'too_many_unk'
        WHEN entropy < $min_entropy THEN 'low_information'
        WHEN sensitive_hits > 0 THEN 'sensitive_text'
    END AS rule_reason,
    CASE
        WHEN language <> 'zho' OR han_share < $min_han_share
            THEN 'han_share=' || round(han_share, 3) || ' language=' || language
        WHEN noun_count < $min_nouns THEN 'nouns=' || noun_count
        WHEN unk_count > $max_unk THEN 'unk=' || unk_count
        WHEN entropy < $min_entropy THEN 'entropy=' || round(entropy, 6)
        WHEN sensitive_hits > 0 THEN sensitive_terms
    END AS detail
FROM scored
ORDER BY warc_file, warc_offset, img_index
