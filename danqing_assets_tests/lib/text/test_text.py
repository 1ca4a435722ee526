"""Caption text scores: normalisation, jieba words, nouns, [UNK] counts, cleaning rules, entropy, language ID."""

from __future__ import annotations

import importlib.util
import random

import polars as pl
import pytest

from danqing_assets.lib import text
from danqing_assets.lib.text import (
    DEFAULT_MAX_UNK,
    DEFAULT_MIN_ENTROPY,
    SCORE_COLUMNS,
    WordPieceUnkCounter,
    caption_entropy,
    clean_caption,
    count_nouns,
    count_unk,
    count_words,
    count_words_many,
    default_vocab_path,
    detect_language,
    han_share,
    normalize_caption,
    score_captions,
    to_simplified,
)

# Real-looking captions of 8-40 jieba words, some with a few emoji or web decoration.
NORMAL = [
    "春天的公园里开满了五颜六色的鲜花，孩子们在草地上放风筝",
    "2024年夏季新款韩版宽松纯棉短袖T恤女装 白色 M码",
    "北京故宫博物院的雪景，红墙金瓦在白雪的映衬下格外美丽 🌸",
    "新鲜采摘的有机草莓，酸甜可口，适合做蛋糕和果酱😍👍",
    "杭州西湖断桥残雪，游客们纷纷拿出手机拍照留念",
    "华为Mate 60 Pro智能手机 12GB+512GB 雅川青 官方正品",
    "一只橘色的小猫趴在窗台上晒太阳，看起来非常惬意🐱",
    "3月15日，成都市民在人民公园茶馆里喝茶聊天，享受悠闲的午后时光。",
    "红烧肉的家常做法：五花肉切块焯水，加冰糖炒糖色，小火慢炖一小时",
    "现代简约风格客厅装修效果图，浅灰色布艺沙发搭配原木茶几",
    "黄山日出云海奇观，摄影师凌晨四点登顶拍摄 ✨✨",
    "儿童益智积木玩具 大颗粒拼装 3-6岁男孩女孩生日礼物",
    "好好好，这家餐厅的菜真的很好吃，服务也好，下次还来！！！",
    "我爱我家，我爱我的家人，我爱我的祖国",
]
# Low-information captions: emoji / symbol spam and repetition.
SPAM = [
    "🔥🔥🔥!!!【特价】【特价】【特价】~~~~###",
    "好好好好好好好好好好",
    "★★★★★☆☆☆☆☆",
    "=====>>>>>点击<<<<<=====",
    "买买买买买买买",
    "😂😂😂😂😂😂",
    "好看好看好看好看好看",
    "特价特价特价特价特价特价",
    "♥♥♥ 爱 ♥♥♥",
    "↓↓↓↓ 点击这里 ↓↓↓↓ 🔥🔥🔥🔥🔥",
    "👍👍👍👍好👍👍👍👍",
    "。。。。。。。。。",
]
BAD_INPUTS = [
    None, "", "   \t\n ", "\ud800abc", "a\x00b\x07c\x1b[0m", "\ufffd\ufffd", "\u200b\u200d\ufeff", "x" * 100_000,
    "漢字かなカナ한글 English Русский العربية 😀", "\U00020000" * 50,
]  # fmt: skip


# --- stage 1 helpers --------------------------------------------------------------------------------------------------


def test_normalize_caption_folds_script_width_case_space_and_edge_punctuation():
    assert normalize_caption("  【春天的花】！ ") == "春天的花"
    assert normalize_caption("這是 ＡＢＣ\u3000  測試。。") == "这是 abc 测试"
    assert normalize_caption("Hello\tWORLD\n") == "hello world"
    assert normalize_caption("🔥好看的猫🐱") == "好看的猫"
    assert normalize_caption("春天\u200b的花") == "春天的花"  # zero-width space removed, not a word break
    # Inner punctuation is kept: only the edges are stripped.
    assert normalize_caption("猫，狗！") == "猫,狗"
    assert normalize_caption(normalize_caption("這是 ＡＢＣ 測試")) == normalize_caption("這是 ＡＢＣ 測試")
    assert normalize_caption("漢字") == normalize_caption("汉字")


@pytest.mark.parametrize(
    ("caption", "words"),
    [
        ("我爱北京天安门", 4),  # 我 / 爱 / 北京 / 天安门
        ("小明硕士毕业于中国科学院计算所，后在日本京都大学深造", 10),  # 11 tokens, "，" does not count
        ("2024年新款连衣裙 夏季", 5),  # 2024 / 年 / 新款 / 连衣裙 / 夏季; the space does not count
        ("iPhone 15 Pro Max 手机壳", 6),  # iPhone / 15 / Pro / Max / 手机 / 壳
        ("李小福是创新办主任也是云计算方面的专家", 12),  # HMM keeps the unknown name 李小福 whole
        ("🔥🔥🔥!!!", 0),
        ("", 0),
        (None, 0),
        ("   ", 0),
    ],
)
def test_count_words_known_sentences(caption, words):
    assert count_words(caption) == words


def test_count_words_traditional_counts_like_simplified():
    assert count_words("這是一個關於臺灣圖書館的測試") == count_words("这是一个关于台湾图书馆的测试") == 7


def test_count_words_many_matches_single_and_keeps_order():
    caps = ["我爱北京天安门", None, "🔥🔥🔥!!!", "我爱北京天安门", "2024年新款连衣裙 夏季"]
    assert count_words_many(caps) == [count_words(c) for c in caps] == [4, 0, 0, 4, 5]


def test_count_words_many_segments_each_distinct_string_once(monkeypatch):
    calls = []
    real = text.count_words
    monkeypatch.setattr(text.tokens, "count_words", lambda s: calls.append(s) or real(s))  # looked up there
    assert text.count_words_many(["猫", "狗", "猫", "猫", "狗"]) == [1, 1, 1, 1, 1]
    assert sorted(calls) == ["狗", "猫"]


def test_han_share_definition():
    assert han_share("2024年新款！") == 1.0  # digits and punctuation are not letter-like
    assert han_share("iPhone 手机壳") == pytest.approx(3 / 9)
    assert han_share("hello") == 0.0
    assert han_share("〇一二三abc") == pytest.approx(4 / 7)  # 〇 (category Nl) is Han and letter-like
    assert han_share("😀!!! 123") == 0.0
    assert han_share(None) == 0.0
    assert han_share("東京タワー") == pytest.approx(2 / 5)


@pytest.mark.parametrize(
    ("caption", "lang"),
    [
        ("这是一个关于台湾图书馆的测试", "zho"),
        ("這是一個關於臺灣圖書館的測試", "zho"),
        ("东京タワーの夜景がとても綺麗です", "jpn"),
        ("これはテストです", "jpn"),
        ("안녕하세요 세계 여러분", "kor"),
        ("A cute cat sleeping on the sofa in the living room", "eng"),
        ("Bonjour tout le monde, bienvenue à Paris", "fra"),
        ("Nike Air Max 90 男鞋", "zho"),  # mixed: 2 Han units of 5 -> still Chinese
        ("iPhone 15 Pro Max 手机壳", "zho"),
        ("Portrait of a young woman standing in the old town of Beijing 北京", "eng"),  # 2 Han units of 13
        ("😀😀 123 !!!", "und"),
        ("", "und"),
        (None, "und"),
        ("ab", "und"),
        # the kana rule (JAPANESE_MIN_KANA_SHARE): Japanese from 10 % kana among Han + kana, and U+30FB is no kana
        ("夏日小清新の早餐搭配推荐，简单又营养的一周食谱", "zho"),  # 1 kana, 22 Han: a borrowed "の"
        ("故宫是明清两代的皇家宫殿，旧称紫禁城，位于北京中轴线的中心。这家日式拉面（ラーメン）店很受欢迎", "zho"),  # 4 kana, 38 Han
        ("列奥纳多・达・芬奇", "zho"),  # the katakana middle dot in a transliterated name
        ("東京都千代田区丸の内", "jpn"),  # 1 kana, 9 Han
    ],
)
def test_detect_language(caption, lang):
    assert detect_language(caption) == lang


def test_to_simplified():
    assert to_simplified("頭髮發展 萬裏長城 鬆") == "头发发展 万里长城 松"
    assert to_simplified("abc") == "abc"
    assert to_simplified(None) == ""
    assert to_simplified("\ud800臺灣") == "\ufffd台湾"  # lone surrogate sanitised, not an encoder crash


# --- cleaning rules, one by one --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        # 2. full-width letters / digits -> ASCII; full-width punctuation stays
        ("ＡＢＣ１２３手机，好", "ABC123手机，好"),
        # 3. HTML entities decoded (also double-escaped), tags and residue removed
        ("<p>可爱的&amp;nbsp;小猫</p>", "可爱的 小猫"),
        ("春天&quot;花开&quot;<br/>", '春天"花开"'),
        ("鲜花&bogus;盛开 <!-- x -->", "鲜花 盛开"),
        ("<<三体>> 刘慈欣", "<<三体>> 刘慈欣"),  # not a tag
        # 4. URLs, e-mails, bare domains, image file names
        ("故宫雪景 http://example.com/a/b.jpg?x=1", "故宫雪景"),
        ("详情见 www.example.com.cn/page 谢谢", "详情见 谢谢"),
        ("联系 info@example.com 获取", "联系 获取"),
        ("图片来自example.com的网友", "图片来自 的网友"),
        ("IMG_20240101_0001.JPG 西湖", "西湖"),
        # 5. ad / marker tags and a leading site tag
        ("【包邮】【正品】纯棉T恤", "纯棉T恤"),
        ("[图] 宝马X5 2019款", "宝马X5 2019款"),
        ("宝马X5（组图）", "宝马X5"),
        ("【中关村在线】华为手机评测", "华为手机评测"),
        ("【三体】刘慈欣", "【三体】刘慈欣"),  # a book title is not an ad tag
        ("【中国地图】高清", "【中国地图】高清"),  # 图 only counts as a marker when it is the whole tag
        ("【限时特价】连衣裙", "连衣裙"),
        # 6. site / SEO suffixes, stacked ones too; a bare site name stays
        ("北京故宫的雪景 - 百度图片", "北京故宫的雪景"),
        ("春季新款连衣裙_淘宝网", "春季新款连衣裙"),
        ("华为手机|华为官网", "华为手机"),
        ("红烧肉的做法_菜谱_美食天下网", "红烧肉的做法_菜谱"),
        ("标题 - 栏目_XX商城 | 某某官网", "标题 - 栏目"),
        ("百度图片", "百度图片"),
        ("iPhone 15 - Apple 官网", "iPhone 15"),
        ("天安门广场 - 升旗仪式新闻", "天安门广场 - 升旗仪式新闻"),  # generic words are not site names
        ("国庆阅兵|新浪新闻", "国庆阅兵"),
        # 7. emoji, symbols, private use, controls; ℃ and ㎡ stay; a space only between ASCII words
        ("好看🔥🔥的猫🐱", "好看的猫"),
        ("nice🔥day", "nice day"),
        ("★精品★ 三室两厅 120㎡ 室温25℃", "精品 三室两厅 120㎡ 室温25℃"),
        ("图标\ue600文字\x07结束\u200b了", "图标文字结束了"),
        ("👨\u200d👩\u200d👧 一家人", "一家人"),
        # 8. decorative runs, hashtags, repeated punctuation, empty brackets
        ("~~~~好看~~~~ ####", "好看"),
        ("#春节快乐# 全家福!!!!!!", "春节快乐 全家福!"),
        ("C# 编程", "C# 编程"),
        ("真的吗？？？好。。。", "真的吗？好。"),
        ("等待......", "等待..."),
        ("这样………", "这样……"),
        ("【】（）春天", "春天"),
        # 9. whitespace folded, separators trimmed at the ends
        ("  ——春天\t\n的花—— ", "春天 的花"),
        ("", ""),
        (None, ""),
    ],
)
def test_clean_caption_rules(raw, clean):
    assert clean_caption(raw) == clean


def test_clean_caption_never_raises_on_bad_input():
    for raw in BAD_INPUTS:
        out = clean_caption(raw)
        assert isinstance(out, str)
        out.encode("utf-8")  # valid UTF-8, writable to Parquet


# --- [UNK] counting ---------------------------------------------------------------------------------------------------


def test_unk_counts_rare_characters_and_emoji():
    assert count_unk("春天的公园") == 0
    assert count_unk("𠀀𠀁𠀂好") == 3  # CJK Extension B characters are not in the vocabulary
    assert count_unk("\U0002a6a5\U0002a6a6 测试 \U00020001") == 3
    assert count_unk("😀😀 🔥") == 1  # "😀😀" is one basic token, unknown; 🔥 is in the vocabulary
    assert count_unk("unaffable xyzzyqwv iPhone") == 0  # WordPiece covers ASCII words with ## pieces
    assert count_unk("a" * 201) == 1  # longer than max_input_chars_per_word (200)
    assert count_unk("Café ÉCOLE") == 0  # lower-cased and accent-stripped
    assert count_unk("") == count_unk(None) == 0


def test_unk_counter_custom_vocab_wordpiece(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\nun\n##aff\n##able\n猫\n，\n", encoding="utf-8")
    counter = WordPieceUnkCounter(vocab)
    assert counter.count("unaffable") == 0  # un ##aff ##able
    assert counter.count("unaffablex") == 1  # no piece covers the tail: the whole word is one [UNK]
    assert counter.count("猫，狗") == 1  # 狗 missing
    assert counter.count("UNAFFABLE 猫猫") == 0
    assert count_unk("狗狗", vocab_path=vocab) == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        WordPieceUnkCounter(empty)


def _reference_tokenizer():
    """cn_clip's own BERT tokenizer, loaded from its file (the package __init__ would import torch)."""
    path = default_vocab_path().parent / "bert_tokenizer.py"
    spec = importlib.util.spec_from_file_location("_cn_clip_bert_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as err:  # pragma: no cover - `six` missing
        pytest.skip(f"cannot load cn_clip's tokenizer: {err}")
    return module.FullTokenizer(str(default_vocab_path()))


def test_unk_count_equals_cn_clip_tokenizer_on_fuzzed_text():
    if importlib.util.find_spec("cn_clip") is None:  # pragma: no cover
        pytest.skip("cn_clip not installed")
    ref = _reference_tokenizer()
    rng = random.Random(7)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        " \t\n\u3000\xa0",
        "，。！？、；：“”‘’（）【】《》!?.,;:'\"()[]{}<>-_/\\|@#$%^&*~`+=",
        "的一是了我不在人有他这中大为上个国们以要春天公园花朵手机",
        "𠀀𠀁𠀂𠀃𪚥",
        "😀🔥👍😂😎🌸❤️✨",
        "éèêëàâäôöûüçñÉÅİıß",
        "\x00\x07\u200b\u200d\ufeff\ufffd\u0301\u0308",
        "あいうえおカタカナー한국어豈更車℃№㎡㈱①²\U0001d400\U00010140\U000e0041",
    ]
    for _ in range(3000):
        s = "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 30)))
        if rng.random() < 0.3:
            s += " " + rng.choice(["unaffable", "iPhone15Pro", "hello,world", "COVID-19", "a" * 250, "xyzzyqwv"])
        expected = sum(1 for t in ref.tokenize(s) if t == "[UNK]")
        assert count_unk(s) == expected, repr(s)


def test_default_vocab_is_cn_clip_bert_vocab():
    path = default_vocab_path()
    with open(path, encoding="utf-8") as fh:  # read line by line, as BERT's load_vocab does
        lines = [line.strip() for line in fh]
    assert len(lines) == 21128 and "[UNK]" in lines and "猫" in lines


# --- nouns ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caption", "nouns"),
    [
        ("我爱北京天安门", 2),  # 北京 ns, 天安门 ns
        ("他来到了网易杭研大厦", 3),  # 网易 n, 杭研 (HMM word, not in the dictionary), 大厦 n
        ("酒店服务", 2),  # 酒店 n, 服务 vn
        ("欢迎光临", 0),
        ("非常漂亮", 0),
        ("iPhone 15", 0),  # English words and numbers are not nouns
        ("", 0),
        (None, 0),
    ],
)
def test_count_nouns(caption, nouns):
    assert count_nouns(caption) == nouns


def test_noun_presence_agrees_with_jieba_posseg_on_real_captions():
    """The one-segmentation dictionary lookup approximates jieba.posseg's "has a noun" on normal captions."""
    import jieba.posseg

    caps = NORMAL + ["美丽的西湖风景", "欢迎光临本店", "非常好看", "李小福是创新办主任也是云计算方面的专家"]
    agree = 0
    for c in caps:
        ours = count_nouns(c) > 0
        theirs = any(p.flag.startswith("n") or p.flag == "vn" for p in jieba.posseg.lcut(c))
        agree += ours == theirs
    assert agree >= len(caps) - 1


# --- entropy ----------------------------------------------------------------------------------------------------------


def test_entropy_definition_values():
    assert caption_entropy("") == 0.0
    assert caption_entropy("好") == 0.0
    assert caption_entropy("好好好好") == 0.0
    assert caption_entropy("春天来了") == 1.0  # no character repeats
    assert caption_entropy("好看好看好看") == pytest.approx(1 / 2.584962500721156)  # 1 bit / log2(6)
    assert caption_entropy("春天来了", retention=0.5) == 0.5
    assert caption_entropy("春 天 来 了") == 1.0  # spaces ignored


def test_entropy_ordering_and_default_threshold_separates_spam_from_normal():
    df = score_captions(NORMAL + SPAM)
    normal = df["entropy"][: len(NORMAL)].to_list()
    spam = df["entropy"][len(NORMAL) :].to_list()
    assert min(normal) >= DEFAULT_MIN_ENTROPY > max(spam)
    assert min(normal) >= 0.6 and max(spam) <= 0.35  # a margin on both sides
    e = dict(zip(NORMAL + SPAM, df["entropy"].to_list()))
    assert e["春天的公园里开满了五颜六色的鲜花，孩子们在草地上放风筝"] > e["新鲜采摘的有机草莓，酸甜可口，适合做蛋糕和果酱😍👍"]
    assert e["新鲜采摘的有机草莓，酸甜可口，适合做蛋糕和果酱😍👍"] > e["好看好看好看好看好看"] > e["好好好好好好好好好好"]
    assert all(8 <= n <= 40 for n in count_words_many(NORMAL))


def test_batch_entropy_equals_single_text_definition():
    caps = NORMAL + SPAM + ["ab", "a", "猫猫狗", "  ", "x" * 50 + "y"]
    df = score_captions(caps)
    for c, clean, e in zip(caps, df["caption_clean"], df["entropy"]):
        _, retention = text.clean._clean_with_retention(to_simplified(c))
        assert e == pytest.approx(caption_entropy(clean, retention), abs=1e-12)


# --- score_captions ---------------------------------------------------------------------------------------------------


def test_score_captions_columns_types_and_values():
    caps = [
        "這是一個關於臺灣圖書館的測試 - 百度图片",
        "性感美女写真 內衣誘惑 性感美女",
        "𠀀𠀁𠀂𠀃𠀄𠀅 风景",
        "东京タワーの夜景がとても綺麗です",
    ]
    df = score_captions(caps)
    assert df.columns == list(SCORE_COLUMNS)
    assert df.schema == {
        "caption_t2s": pl.String, "caption_clean": pl.String, "han_share": pl.Float64, "language": pl.String,
        "noun_count": pl.Int64, "unk_count": pl.Int64, "entropy": pl.Float64, "sensitive_hits": pl.Int64,
        "sensitive_terms": pl.String, "sensitive_score": pl.Float64, "sensitive_category": pl.String,
    }  # fmt: skip
    r0, r1, r2, r3 = df.to_dicts()
    assert r0["caption_t2s"] == "这是一个关于台湾图书馆的测试 - 百度图片"
    assert r0["caption_clean"] == "这是一个关于台湾图书馆的测试"
    assert (r0["language"], r0["han_share"], r0["noun_count"], r0["unk_count"]) == ("zho", 1.0, 4, 0)
    assert (r0["sensitive_hits"], r0["sensitive_terms"], r0["sensitive_score"], r0["sensitive_category"]) == (0, "", 0.0, None)
    # Traditional spelling of a stage-2 term is caught after t2s; the best stage-2 category wins, with its evidence.
    assert r1["sensitive_category"] == "suggestive" and r1["sensitive_score"] >= 0.9
    assert r1["sensitive_terms"].startswith("内衣诱惑|性感美女") and r1["sensitive_hits"] == 2  # repeats count once
    # Rare characters count as [UNK] on the text before cleaning; more than the paper's 5.
    assert r2["unk_count"] == 6 > DEFAULT_MAX_UNK
    assert r3["language"] == "jpn"


def test_score_captions_order_and_repeats_scored_once(monkeypatch):
    calls = []
    real = text.scoring._clean_with_retention
    monkeypatch.setattr(text.scoring, "_clean_with_retention", lambda s: calls.append(s) or real(s))
    caps = ["猫在睡觉", "狗在跑步", "猫在睡觉", None, "", "猫在睡觉", "狗在跑步"]
    df = score_captions(caps)
    assert df.height == len(caps)
    assert df["caption_clean"].to_list() == ["猫在睡觉", "狗在跑步", "猫在睡觉", "", "", "猫在睡觉", "狗在跑步"]
    assert len(calls) == 3  # "猫在睡觉", "狗在跑步", "" (None and "" are the same caption)


def test_score_captions_bad_inputs_never_raise_and_fail_thresholds():
    df = score_captions(BAD_INPUTS)
    assert df.height == len(BAD_INPUTS)
    rows = df.to_dicts()
    for raw, row in zip(BAD_INPUTS, rows):
        for col in ("caption_t2s", "caption_clean", "language", "sensitive_terms"):
            row[col].encode("utf-8")
        assert 0.0 <= row["han_share"] <= 1.0 and 0.0 <= row["entropy"] <= 1.0
        assert min(row["noun_count"], row["unk_count"], row["sensitive_hits"]) >= 0
    by_raw = dict(zip(range(len(BAD_INPUTS)), rows))
    for i in (0, 1, 2, 5, 6):  # None, empty, whitespace, U+FFFD only, zero-width only
        assert by_raw[i]["caption_clean"] == "" and by_raw[i]["entropy"] == 0.0 and by_raw[i]["noun_count"] == 0
    assert by_raw[3]["caption_t2s"] == "\ufffdabc"
    assert by_raw[7]["entropy"] == 0.0  # 100 KB of one letter
    assert by_raw[9]["unk_count"] == 50  # Extension B only: rejected by max_unk


def test_score_captions_empty_input():
    df = score_captions([])
    assert df.height == 0 and df.columns == list(SCORE_COLUMNS)


def test_score_captions_custom_vocab_and_safety_lexicon(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[UNK]\n猫\n", encoding="utf-8")
    lex = tmp_path / "lex.txt"
    lex.write_text("[categories]\npets text\nkids source\n[pets]\n小猫\n[kids]\n小孩\n", encoding="utf-8")
    df = score_captions(["小猫 猫", "小孩"], vocab_path=vocab, safety_classifier=f"safety:{lex}")
    assert df["unk_count"].to_list() == [1, 2]
    assert df["sensitive_terms"].to_list() == ["小猫", ""]  # a stage-1 category does not score in stage 2
    assert df["sensitive_category"].to_list() == ["pets", None]
    with pytest.raises(FileNotFoundError):
        score_captions(["猫"], safety_classifier=f"safety:{tmp_path / 'missing.txt'}")
