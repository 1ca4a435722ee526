-- Stage 4 (cross-modal band): keep pairs whose image-text similarity lies inside the band.
-- Input view `scored`: visually_diversified_pairs LEFT JOINed with cross_modal_scores on pair_id (a pair without a
-- score row has NULL scores).
-- The paper keeps Chinese-CLIP ViT-L/14 similarities inside [1.06, 1.24] on a scale it does not explain; here the
-- similarity is the plain cosine of the L2-normalised embeddings of the `clip` resource's model (recorded in
-- cross_modal_scores.similarity_scale), and the band is either absolute ($band_mode = 'absolute': $min_similarity ..
-- $max_similarity) or per snapshot by quantile ($band_mode = 'quantile': drop below the $low_quantile and above the
-- $high_quantile quantile of this snapshot's similarities).
-- Above the band are usually text-heavy (OCR-like) images; a model that cannot read will not score them high, so an
-- image whose text-heaviness (lib/textness.py, no CLIP needed) is at least $max_text_heaviness counts as above the band
-- too. Text-heavy is checked first: a poster is `high_similarity` even when a small model scores it low.
-- Fails closed: a missing, NULL or NaN similarity or text-heaviness rejects the pair as `unscored`.
-- Output, like every decision query: pair_id, reason (NULL = kept), detail.
WITH bounds AS (
    -- an aggregate without GROUP BY: exactly one row, also for an empty snapshot
    SELECT
        CASE WHEN $band_mode = 'quantile' THEN quantile_cont(similarity, $low_quantile) ELSE $min_similarity END AS lo,
        CASE WHEN $band_mode = 'quantile' THEN quantile_cont(similarity, $high_quantile) ELSE $max_similarity END AS hi
    FROM scored
    WHERE similarity IS NOT NULL AND NOT isnan(similarity)
),
checked AS (
    SELECT
        scored.*, bounds.lo, bounds.hi,
        concat_ws(',',
            CASE WHEN similarity IS NULL OR isnan(similarity) THEN 'similarity' END,
            CASE WHEN text_heaviness IS NULL OR isnan(text_heaviness) THEN 'text_heaviness' END
        ) AS missing
    FROM scored CROSS JOIN bounds
)
SELECT
    pair_id,
    CASE
        WHEN missing <> '' THEN 'unscored'
        WHEN text_heaviness >= $max_text_heaviness OR similarity > hi THEN 'high_similarity'
        WHEN similarity < lo THEN 'low_similarity'
    END AS reason,
    CASE
        WHEN missing <> '' THEN 'missing score: ' || missing
        WHEN text_heaviness >= $max_text_heaviness
            THEN 'text_heaviness=' || round(text_heaviness, 3) || ' similarity=' || round(similarity, 4)
        WHEN similarity > hi THEN 'similarity=' || round(similarity, 4) || ' > ' || round(hi, 4)
        WHEN similarity < lo THEN 'similarity=' || round(similarity, 4) || ' < ' || round(lo, 4)
    END AS detail
FROM checked
ORDER BY warc_file, warc_offset, img_index
