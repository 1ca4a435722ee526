"""Caption near-duplicate clusters: MinHash LSH candidates, exact-Jaccard verification, the one-edit rule for short
captions, representatives; and the merge rates on the near-duplicate evaluation set."""

from __future__ import annotations

import itertools
import random

import pytest

from danqing_assets.lib.text_dedup import _normalize, edit_form, jaccard, near_duplicate_clusters, one_edit, shingles

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
    # Jaccard alone (the one-edit rule off) misses the one-character change; the one-edit rule merges it.
    assert near_duplicate_clusters(texts, one_edit_min_chars=None) == [0, 1, 0, 3, 0, 1, 6, 7, 8]
    assert near_duplicate_clusters(texts, threshold=0.5, one_edit_min_chars=None) == [0, 1, 0, 3, 0, 1, 6, 7, 3]
    assert near_duplicate_clusters(texts) == [0, 1, 0, 3, 0, 1, 6, 7, 3]


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
    at = near_duplicate_clusters(texts, threshold=0.875, one_edit_min_chars=None)  # b is a plus two characters:
    above = near_duplicate_clusters(texts, threshold=0.876, one_edit_min_chars=None)  # one edit, so rule (a) only
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
    reps = near_duplicate_clusters(texts, threshold=0.85, one_edit_min_chars=None)
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
    got = near_duplicate_clusters(texts, threshold=0.6, one_edit_min_chars=None)
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


# --- the one-edit rule -------------------------------------------------------------------------------------------------

B = "北京故宫的雪景非常美丽游客们纷纷拍照留念"


@pytest.mark.parametrize(
    "variant, merged",
    [
        (B.replace("雪", "夜"), True),  # a character substituted
        (B[:5] + "大" + B[5:], True),  # inserted
        (B[:5] + B[6:], True),  # deleted
        ("北京故宫的雪景，非常美丽！游客们纷纷拍照留念。", True),  # punctuation
        (B.replace("美丽", "漂亮"), True),  # a two-character word replaced
        (B.replace("非常美丽", "美丽非常"), True),  # two words swapped
        (B.replace("故宫的雪景", "雪景的故宫"), False),  # two words of 2 swapped around a third: three edits
        (B.replace("故宫", "天坛").replace("游客", "市民"), False),  # two content words differ
        (B.replace("非常美丽", "十分壮观"), False),  # a four-character stretch
        (B[:8], False),  # a prefix: many characters deleted
    ],
)
def test_one_edit_rule(variant, merged):
    assert one_edit(edit_form(_normalize(B)), edit_form(_normalize(variant))) is merged
    assert (near_duplicate_clusters([B, variant]) == [0, 0]) is merged


def test_one_edit_rule_needs_ten_characters_and_can_be_disabled():
    short = "春天的花开了真美"  # 8 characters: one edit is an eighth of the caption
    assert near_duplicate_clusters([short, short.replace("真", "好")]) == [0, 1]
    ten = "春天的花开了真是美啊"
    assert near_duplicate_clusters([ten, ten.replace("真", "好")]) == [0, 0]
    assert near_duplicate_clusters([ten, ten[:-1]]) == [0, 0]  # 10 -> 9 characters: the longer has 10
    assert near_duplicate_clusters([ten, ten.replace("真", "好")], one_edit_min_chars=None) == [0, 1]
    with pytest.raises(ValueError, match="one_edit_min_chars"):
        near_duplicate_clusters(["a", "b"], one_edit_min_chars=2)


def test_one_edit_pairs_are_found_among_many_unrelated_captions():
    """Deletion keys find every one-edit pair wherever it hides: 300 short captions, each with an edited copy, among
    3,000 random ones; nothing else merges."""
    rng = random.Random(4)
    texts = [_distinct_han(rng, rng.randint(10, 20)) for _ in range(3300)]
    pairs = []
    for k in range(300):
        t = texts[k]
        i = rng.randrange(len(t))
        texts.append(t[:i] + rng.choice("甲乙丙丁") + t[i + 1 :])
        pairs.append((k, len(texts) - 1))
    reps = near_duplicate_clusters(texts)
    assert all(reps[b] == a for a, b in pairs)
    assert sum(r != i for i, r in enumerate(reps)) == 300


def test_merge_rates_on_the_near_duplicate_evaluation_set():
    """The issue's targets: one-edit variants of captions of >= 10 characters merged >= 95 %; distinct captions
    sharing a template (two or more content words differ) merged <= 2 %."""
    from danqing_assets_tests.lib.neardup_eval import merge_rates

    r = merge_rates()
    assert r["one_edit_n"] >= 200 and r["template_n"] >= 1000
    assert r["one_edit"] >= 0.95, r["by_kind"]
    assert all(v >= 0.9 for v in r["by_kind"].values()), r["by_kind"]
    assert r["template"] <= 0.02, r["template_merged"][:10]


def test_keys_spilled_in_parts_give_the_same_clusters(tmp_path, monkeypatch):
    """Beyond `keys_in_memory` keys, the one-edit index is split by key value into parts spilled to a scratch folder
    and grouped a part at a time, and the LSH band keys (2,400 texts x 9 bands) go a band to a file: the same clusters
    as the in-memory indexes (here ~90 k deletion keys in parts of 5 k, and in the most parts allowed), and the
    scratch folder is gone afterwards."""
    rng = random.Random(8)
    texts = [_distinct_han(rng, rng.randint(11, 30)) for _ in range(2000)]
    for k in range(400):  # one-edit variants: substituted, inserted, deleted, swapped
        t, i = texts[k], rng.randrange(len(texts[k]) - 1)
        texts.append([t[:i] + "甲" + t[i + 1 :], t[:i] + "乙" + t[i:], t[:i] + t[i + 1 :],
                      t[:i] + t[i + 1] + t[i] + t[i + 2 :]][k % 4])
    rng.shuffle(texts)
    from danqing_assets.lib import text_dedup

    bands_spilled = []
    spill_bands = text_dedup._spilled_bands
    monkeypatch.setattr(text_dedup, "_spilled_bands", lambda *a, **k: bands_spilled.append(1) or spill_bands(*a, **k))
    whole = near_duplicate_clusters(texts)
    assert sum(r != i for i, r in enumerate(whole)) == 400 and not bands_spilled
    for limit in (5_000, 100):
        spill = tmp_path / f"spill-{limit}"
        assert near_duplicate_clusters(texts, spill_dir=spill, keys_in_memory=limit) == whole
        assert spill.is_dir() and not any(spill.iterdir())
    assert len(bands_spilled) == 2
    with pytest.raises(ValueError, match="keys_in_memory"):
        near_duplicate_clusters(texts, keys_in_memory=0)


def test_lsh_keys_on_two_processes_give_the_same_clusters(tmp_path):
    """`workers=2` computes the MinHash keys of every other block of texts in a spawned worker process: the same
    clusters as one process, spilled or not."""
    from danqing_assets.lib import text_dedup

    rng = random.Random(9)
    base = [_distinct_han(rng, rng.randint(20, 40)) for _ in range(300)]
    texts = base + [t[:-2] + "的图" for t in base[:100]] + [t + "。" for t in base[100:150]]  # Jaccard and punctuation
    rng.shuffle(texts)
    old_block = text_dedup._POOL_BLOCK
    try:
        text_dedup._POOL_BLOCK = 64  # several blocks for the worker
        one = near_duplicate_clusters(texts, one_edit_min_chars=None)
        two = near_duplicate_clusters(texts, one_edit_min_chars=None, workers=2)
        spilled = near_duplicate_clusters(texts, one_edit_min_chars=None, workers=2, keys_in_memory=100,
                                          spill_dir=tmp_path)
    finally:
        text_dedup._POOL_BLOCK = old_block
    assert one == two == spilled
    assert sum(r != i for i, r in enumerate(one)) >= 100  # most variants merged (the equality above is the point)
    with pytest.raises(ValueError, match="workers"):
        near_duplicate_clusters(texts, workers=0)


def test_edit_form_keeps_exactly_the_alphanumeric_characters():
    """`edit_form` (a regex) keeps a character exactly when `str.isalnum()` holds, for every Unicode code point, and
    keeps the order of what it keeps."""
    from danqing_assets.lib.text_dedup import edit_form

    dropped = [cp for cp in range(0x110000) if (edit_form(chr(cp)) == chr(cp)) != chr(cp).isalnum()]
    assert dropped == []
    assert edit_form("  iPhone 15 Pro（256GB）—— 深空黑！_x²") == "iPhone15Pro256GB深空黑x²"
