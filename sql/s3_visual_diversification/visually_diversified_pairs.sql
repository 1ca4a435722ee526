-- Stage 3 (visual diversification), rule part: decide every fetched pair from its image's stored scores.
-- Input view `scored`: fetched (status ok) pairs LEFT JOINed with image_scores on image_sha256 (an image without a
-- score row has NULL scores).
-- Fails closed: no score row (stale image_scores after fetched_images was re-run), a NULL or NaN metric (text
-- heaviness included: semantic dedup leaves text-dominated images out of its merges, stage 4 bands them), or a missing
-- NSFW score while screening was on (`nsfw_scorer` is set) rejects the pair as `unscored`. With screening OFF by
-- configuration (`nsfw_scorer` NULL) the pair is not screened for NSFW; the metadata and the release card say so.
-- Output, like every decision query: pair_id, reason (NULL = passes every quality rule), detail. Redundancy (exact,
-- pHash and embedding duplicates) is removed afterwards among the pairs that pass, so a rejected image never
-- represents a cluster.
-- $blur_measure: 'blur_score' (default: multi-scale, contrast-normalised; see lib/image_metrics.py) or
-- 'laplacian_native' (the paper's literal 3x3 Laplacian variance at native size, which drops many sharp photos).
WITH checked AS (
    SELECT
        *,
        CASE WHEN score_error IS NOT NULL THEN '' ELSE concat_ws(',',
            CASE WHEN scored_image IS NULL THEN 'no score row' END,
            CASE WHEN scored_image IS NOT NULL AND (shortest_edge IS NULL OR aspect_ratio IS NULL
                 OR isnan(aspect_ratio)) THEN 'size' END,
            CASE WHEN scored_image IS NOT NULL AND (grey_std IS NULL OR isnan(grey_std)) THEN 'grey_std' END,
            CASE WHEN scored_image IS NOT NULL AND $blur_measure = 'blur_score'
                 AND (blur_score IS NULL OR isnan(blur_score)) THEN 'blur_score' END,
            CASE WHEN scored_image IS NOT NULL AND $blur_measure = 'laplacian_native'
                 AND (laplacian_var_native IS NULL OR isnan(laplacian_var_native)) THEN 'laplacian_var_native' END,
            CASE WHEN scored_image IS NOT NULL AND (entropy_bits IS NULL OR isnan(entropy_bits)) THEN 'entropy_bits' END,
            CASE WHEN scored_image IS NOT NULL AND (text_heaviness IS NULL OR isnan(text_heaviness))
                 THEN 'text_heaviness' END,
            CASE WHEN nsfw_scorer IS NOT NULL AND (nsfw_score IS NULL OR isnan(nsfw_score))
                 THEN 'nsfw_score (' || nsfw_scorer || ')' END
        ) END AS missing
    FROM scored
)
SELECT
    pair_id,
    CASE
        WHEN score_error IS NOT NULL THEN score_error
        WHEN missing <> '' THEN 'unscored'
        WHEN shortest_edge <= $min_shortest_edge THEN 'too_small'
        WHEN aspect_ratio < 1.0 / $max_aspect OR aspect_ratio > $max_aspect THEN 'extreme_aspect'
        WHEN grey_std < $min_grey_std THEN 'flat_image'
        WHEN ($blur_measure = 'blur_score' AND blur_score < $min_blur_score)
          OR ($blur_measure = 'laplacian_native' AND laplacian_var_native < $min_laplacian_var) THEN 'blurry_image'
        WHEN entropy_bits < $min_entropy_bits THEN 'low_entropy_image'
        WHEN nsfw_score IS NOT NULL AND nsfw_score >= $max_nsfw_score THEN 'nsfw_image'
    END AS reason,
    CASE
        WHEN score_error IS NOT NULL THEN score_error_detail
        WHEN missing <> '' THEN 'missing score: ' || missing
        WHEN shortest_edge <= $min_shortest_edge THEN 'shortest_edge=' || shortest_edge
        WHEN aspect_ratio < 1.0 / $max_aspect OR aspect_ratio > $max_aspect THEN 'aspect=' || round(aspect_ratio, 3)
        WHEN grey_std < $min_grey_std THEN 'grey_std=' || round(grey_std, 3)
        WHEN ($blur_measure = 'blur_score' AND blur_score < $min_blur_score)
            THEN 'blur_score=' || round(blur_score, 4)
        WHEN ($blur_measure = 'laplacian_native' AND laplacian_var_native < $min_laplacian_var)
            THEN 'laplacian_var=' || round(laplacian_var_native, 1)
        WHEN entropy_bits < $min_entropy_bits THEN 'entropy_bits=' || round(entropy_bits, 3)
        WHEN nsfw_score IS NOT NULL AND nsfw_score >= $max_nsfw_score THEN 'nsfw=' || round(nsfw_score, 3)
    END AS detail
FROM checked
