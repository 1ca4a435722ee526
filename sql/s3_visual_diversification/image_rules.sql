-- Stage 3 (visual diversification), rule part: decide every fetched pair from its image's stored scores.
-- Input view `scored`: fetched (status ok) pairs joined with image_scores on image_sha256.
-- Output: pair_id, rule_reason (NULL = passes every quality rule) and detail. Redundancy (exact, pHash and embedding
-- duplicates) is removed afterwards among the pairs that pass, so a rejected image never represents a cluster.
-- $blur_measure: 'blur_score' (default: multi-scale, contrast-normalised; see lib/image_metrics.py) or
-- 'laplacian_native' (the paper's literal 3x3 Laplacian variance at native size, which drops many sharp photos).
SELECT
    pair_id,
    CASE
        WHEN score_error IS NOT NULL THEN score_error
        WHEN shortest_edge <= $min_shortest_edge THEN 'too_small'
        WHEN aspect_ratio < 1.0 / $max_aspect OR aspect_ratio > $max_aspect THEN 'extreme_aspect'
        WHEN grey_std < $min_grey_std THEN 'flat_image'
        WHEN ($blur_measure = 'blur_score' AND blur_score < $min_blur_score)
          OR ($blur_measure = 'laplacian_native' AND laplacian_var_native < $min_laplacian_var) THEN 'blurry_image'
        WHEN entropy_bits < $min_entropy_bits THEN 'low_entropy_image'
        WHEN nsfw_score IS NOT NULL AND nsfw_score >= $max_nsfw_score THEN 'nsfw_image'
    END AS rule_reason,
    CASE
        WHEN score_error IS NOT NULL THEN score_error_detail
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
FROM scored
