"""Caption near-duplicate clusters: MinHash LSH candidates, exact-Jaccard verification, representatives."""

from __future__ import annotations

import itertools
import random

import pytest

from danqing_assets.lib.text_dedup import _normalize, jaccard, near_duplicate_clusters, shingles

BASE = [
    "北京故宫的雪景非常美丽，游客们纷纷拍照留念",
    "杭州西湖断桥残雪，湖面上飘着薄雾",
    "2024年夏季新款韩版宽松纯棉短袖T恤女装",
    "红烧肉的家常做法，五花肉切块焯水后小火慢炖",
    "一只橘色的小猫趴在窗台上晒太阳",
]


def _brute_force_components(texts: list[str], threshold: float, ngram: int = 3) -> list[int]:
    """Reference: union of every pair with exact Jaccard >= threshold; representative = smallest index."""
    n = len(texts)
    grams = [shingles(_normalize(t), ngram) for t in texts]
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for i, j in itertools.combinations(range(n), 2):
        if jaccard(grams[i], grams[j]) >= threshold:
            a, b = find(i), find(j)
            parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(n)]


def test_near_duplicates_cluster_and_different_sentences_do_not():
    one_char_changed = BASE[2].replace("纯棉", "纯綿")
    texts = [
        BASE[0],
        BASE[1],
        BASE[0] + "！",  # punctuation added: J = 18 / 19
        BASE[2],
        "北京故宫的雪景非常美丽，游客们纷纷拍照留念。",  # J = 18 / 19 with text 0
        BASE[1],  # exact repeat
        BASE[3],
        BASE[4],
        one_char_changed,  # 3 of 19 trigrams change: J = 16 / 22 = 0.73
    ]
    assert jaccard(shingles(BASE[2]), shingles(one_char_changed)) == pytest.approx(16 / 22)
    assert near_duplicate_clusters(texts) == [0, 1, 0, 3, 0, 1, 6, 7, 8]
    assert near_duplicate_clusters(texts, threshold=0.5) == [0, 1, 0, 3, 0, 1, 6, 7, 3]


def test_representative_is_the_smallest_index_even_when_it_comes_later_in_a_bucket():
    a = "上海外滩夜景灯光璀璨，黄浦江上游船来来往往"
    texts = ["无关的句子一号", a + "图片", "另一个完全不同的句子", a, a + "高清"]
    reps = near_duplicate_clusters(texts, threshold=0.7)
    assert reps == [0, 1, 2, 1, 1]


def test_case_whitespace_none_and_short_texts():
    texts = ["Hello  World", "hello world", None, "", "ab", "AB", "ab ", "好", "猫"]
    # "ab" is shorter than the 3-gram: the whole string is its only shingle, so "ab" == "AB" but "好" != "猫".
    assert near_duplicate_clusters(texts) == [0, 0, 2, 2, 4, 4, 4, 7, 8]


def _distinct_han(rng: random.Random, k: int) -> str:
    return "".join(rng.sample([chr(c) for c in range(0x4E00, 0x4E00 + 3000)], k))


def test_threshold_is_an_exact_jaccard_cut():
    """60 pairs with J exactly 14/16 = 0.875: LSH proposes some of them; verification keeps them at threshold 0.875
    and drops every one at 0.876."""
    rng = random.Random(5)
    texts = []
    for _ in range(60):
        base = _distinct_han(rng, 18)
        a, b = base[:16], base[:16] + base[16:]  # b adds two trigrams: J = 14 / 16
        assert jaccard(shingles(a), shingles(b)) == 0.875
        texts += [a, b]
    at = near_duplicate_clusters(texts, threshold=0.875)
    above = near_duplicate_clusters(texts, threshold=0.876)
    merged_at = sum(at[i + 1] == i for i in range(0, len(texts), 2))
    assert merged_at >= 5  # about 1 in 3 is an LSH candidate at this banding
    assert above == list(range(len(texts)))


def test_lsh_candidates_below_the_threshold_are_rejected_by_exact_jaccard(monkeypatch):
    from danqing_assets.lib import text_dedup

    checked = []
    real = text_dedup.jaccard
    monkeypatch.setattr(text_dedup, "jaccard", lambda a, b: checked.append(real(a, b)) or checked[-1])
    rng = random.Random(9)
    texts = []
    for _ in range(100):
        base = _distinct_han(rng, 22)
        texts += [base[:20], base[2:22]]  # 16 shared trigrams of 18 each: J = 16 / 20 = 0.8
    reps = near_duplicate_clusters(texts, threshold=0.85)
    assert reps == list(range(len(texts)))  # nothing at J = 0.8 joins at 0.85 ...
    assert len(checked) > 10 and max(checked) == pytest.approx(0.8)  # ... although LSH proposed many such pairs


def test_clusters_are_transitive():
    rng = random.Random(2)
    s = _distinct_han(rng, 54)
    a, b, c = s[0:40], s[7:47], s[14:54]  # J(a, b) = J(b, c) = 31 / 45, J(a, c) = 24 / 52
    ga, gb, gc = (shingles(t) for t in (a, b, c))
    assert jaccard(ga, gb) > 0.5 > jaccard(ga, gc) and jaccard(gb, gc) > 0.5
    assert near_duplicate_clusters([c, "无关文本内容", a, b], threshold=0.5, num_perm=256) == [0, 1, 0, 0]


def test_matches_brute_force_on_random_near_duplicate_families():
    rng = random.Random(11)
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 800)]
    texts: list[str] = []
    for _ in range(60):
        base = "".join(rng.choice(chars) for _ in range(rng.randint(12, 40)))
        texts.append(base)
        for _ in range(rng.randint(0, 4)):
            t = list(base)
            for _ in range(rng.randint(0, 3)):
                t[rng.randrange(len(t))] = rng.choice(chars)
            texts.append("".join(t) + rng.choice(["", "！", "图片"]))
    rng.shuffle(texts)
    got = near_duplicate_clusters(texts, threshold=0.6)
    want = _brute_force_components(texts, threshold=0.6)
    # No false positives: every produced cluster lies inside one true component.
    for i, r in enumerate(got):
        assert want[i] == want[r]
        assert r <= i and got[r] == r
    # LSH misses only pairs close to the threshold: every pair 0.15 above it is found, and most of the rest.
    grams = [shingles(t) for t in texts]
    sims = {
        (i, j): jaccard(grams[i], grams[j])
        for i, j in itertools.combinations(range(len(texts)), 2)
        if jaccard(grams[i], grams[j]) >= 0.6
    }
    clear = [p for p, s in sims.items() if s >= 0.75]
    assert len(sims) > 50 and len(clear) > 20
    assert all(got[i] == got[j] for i, j in clear)
    assert sum(got[i] == got[j] for i, j in sims) >= 0.85 * len(sims)


def test_big_bucket_of_repeats_and_variants_stays_fast_and_correct():
    base = "品牌旗舰店新款智能手机全网通官方正品"
    texts = [base] * 5000 + [f"{base}{i:05d}" for i in range(3000)] + BASE
    reps = near_duplicate_clusters(texts, threshold=0.6)
    assert reps[:5000] == [0] * 5000
    assert set(reps[5000:8000]) == {0}
    assert reps[8000:] == list(range(8000, 8000 + len(BASE)))


def test_empty_and_parameter_validation():
    assert near_duplicate_clusters([]) == []
    assert near_duplicate_clusters(["只有一条"]) == [0]
    for bad in ({"threshold": 0.0}, {"threshold": 1.5}, {"ngram": 0}, {"num_perm": 1}):
        with pytest.raises(ValueError):
            near_duplicate_clusters(["a", "b"], **bad)


def test_threshold_one_means_identical_ngram_sets():
    # datasketch's banding optimum for 1.0 is a single band, which it refuses; two bands are used instead.
    texts = ["春天的花开了", "春天的花开了！", "春天的花开了", "春天的花开了 ", "好好好好", "好好好"]
    assert near_duplicate_clusters(texts, threshold=1.0) == [0, 1, 0, 0, 4, 4]  # {好好好} == {好好好}


def test_seed_and_num_perm_do_not_change_clear_cut_results():
    texts = [BASE[0], BASE[0] + "！", BASE[1], BASE[2], BASE[2] + "。"]
    for seed, num_perm in [(1, 128), (7, 64), (42, 256)]:
        assert near_duplicate_clusters(texts, seed=seed, num_perm=num_perm) == [0, 0, 2, 3, 3]
