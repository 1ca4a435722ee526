"""Text-safety classifier: the shipped SafetyClassifier (evasions, context, categories per stage) on real captions,
its lexicon loader, the plug-in interface, and the targets on the independent evaluation set."""

from __future__ import annotations

import math
import random
import textwrap

import pytest

from danqing_assets.lib.safety import (
    DEFAULT_SAFETY_LEXICON,
    Lexicon,
    LexiconClassifier,
    SafetyClassifier,
    SafetyScore,
    TextSafetyClassifier,
    default_classifier,
    load_lexicon,
    load_text_safety_classifier,
    normalize_for_matching,
    run_classifier,
    skeleton,
    fold,
    stage_scores,
)


def _write(path, body: str, encoding: str = "utf-8"):
    path.write_text(textwrap.dedent(body), encoding=encoding)
    return path


def test_normalize_for_matching():
    assert normalize_for_matching("色 情網站") == "色情网站"
    assert normalize_for_matching("ＡＶ女優") == "av女优"
    assert normalize_for_matching("赌\u200b博\x00!") == "赌博!"
    assert normalize_for_matching(None) == ""
    assert normalize_for_matching("\ud800賭博") == "\ufffd赌博"


def test_load_lexicon_comments_blank_lines_and_normalised_terms(tmp_path):
    path = _write(
        tmp_path / "lex.txt",
        """\
        # a comment
        賭博

          ＶＩＰ通道
        # 色情 commented out
        赌博
        """,
        encoding="utf-8-sig",  # a BOM must not become part of the first term
    )
    lex = load_lexicon(path)
    assert lex.terms == ("赌博", "vip通道")  # t2s, NFKC, lower-cased, deduplicated, comments skipped
    assert len(lex) == 2


def test_load_lexicon_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_lexicon(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="no terms"):
        load_lexicon(_write(tmp_path / "empty.txt", "# only comments\n\n"))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_lexicon(bad)


def test_lexicon_leftmost_longest_non_overlapping_matches():
    lex = Lexicon(["赌", "赌博", "网络赌场", "博彩"])
    assert lex.find_all("赌博网站") == ["赌博"]
    assert lex.find_all("网络赌场和博彩和赌") == ["网络赌场", "博彩", "赌"]
    assert lex.first("正常的句子") is None
    assert lex.find_all("") == []
    assert lex.matches("網絡賭場") == ["网络赌场"]
    with pytest.raises(ValueError):
        Lexicon(["", "  "])


def test_lexicon_agrees_with_naive_substring_search_on_a_large_random_lexicon():
    rng = random.Random(3)
    alphabet = "赌博彩色情网站视频成人毒品枪支代孕血腥的了是我你他ab1"
    terms = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(2, 5))) for _ in range(3000)})
    lex = Lexicon(terms)
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        naive = any(t in text for t in lex.terms)
        assert (lex.first(text) is not None) == naive, text
        for m in lex.find_all(text):
            assert m in lex.terms and m in text


def test_lexicon_classifier_flags_variants_and_reports_the_term(tmp_path):
    clf = LexiconClassifier(_write(tmp_path / "t.txt", "色情\nav女优\n网络赌场\n"))
    assert clf.name == "lexicon" and isinstance(clf, TextSafetyClassifier)
    texts = ["色 情網站大全", "ＡＶ女優合集", "网络赌场百家乐", "美丽的西湖风景", "", None]
    assert clf.predict(texts) == [
        (True, "色情"), (True, "av女优"), (True, "网络赌场"), (False, None), (False, None), (False, None)]


def test_load_text_safety_classifier_specs(tmp_path):
    assert load_text_safety_classifier("safety") is default_classifier()
    assert load_text_safety_classifier(" safety ").path == DEFAULT_SAFETY_LEXICON
    custom = _write(tmp_path / "terms.txt", "小猫\n")
    clf = load_text_safety_classifier(f"lexicon:{custom}")
    assert clf.predict(["一只小貓", "小狗"]) == [(True, "小猫"), (False, None)]
    lex = _write(tmp_path / "lex.txt", "[categories]\npets source\n[pets]\n小猫\n")
    own = load_text_safety_classifier(f"safety:{lex}")
    assert isinstance(own, SafetyClassifier) and own.predict(["一只小貓"]) == [(True, "pets:小猫")]
    with pytest.raises(FileNotFoundError):
        load_text_safety_classifier(f"lexicon:{tmp_path / 'missing.txt'}")
    with pytest.raises(FileNotFoundError):
        load_text_safety_classifier(f"safety:{tmp_path / 'missing.txt'}")


# --- the shipped lexicon's rules on real captions ----------------------------------------------------------------------
# (the lexicon alone, spec "safety-lexicon": the shipped model has the last word on top of it; its own tests are below)


def _lexicon():
    return default_classifier(model=False)


def _verdict(text, stage="source"):
    s = _lexicon().score([text], stage)[0]
    return s.category if s.score >= 0.5 else None


@pytest.mark.parametrize(
    "text, category",
    [
        ("色情视频免费看", "sexual"),
        ("色*情 视.频 免费看", "sexual"),  # characters inserted between the letters of a term
        ("色 ❤ 情", "sexual"),
        ("ＡＶ女優 合集", "sexual"),  # full-width and Traditional
        ("約炮 同城", "sexual"),
        ("luo聊 一对一", "sexual"),  # one character of a term in pinyin
        ("网络赌场 注册送彩金", "gambling"),
        ("賭場線上開戶", "gambling"),
        ("六和彩 特码", "gambling"),  # homophone of 六合彩
        ("百佳乐 真人 开户", "gambling"),  # homophone of 百家乐
        ("菠菜平台 秒到账", "gambling"),  # homophone slang in common use
        ("dubo 网站 注册就送", "gambling"),  # pinyin
        ("冰du 出货 同城", "drugs"),
        ("海落因 一手货源", "drugs"),  # homophone of 海洛因
        ("仿真槍 可發射", "weapons"),
        ("代开发票 真票", "fraud"),
        ("斩首视频 完整版", "violence"),
    ],
)
def test_stage1_categories_catch_evasions(text, category):
    assert _verdict(text, "source") == category


@pytest.mark.parametrize(
    "text, category",
    [
        ("加薇信 mm520 欢迎咨询", "spam"),
        ("联系电话13800138000", "spam"),
        ("扫码进群 免费领红包", "spam"),
        ("性感美女 大尺度 私房照", "suggestive"),
        ("美女 湿身 诱惑", "suggestive"),
    ],
)
def test_stage2_categories(text, category):
    assert _verdict(text, "text") == category
    assert _verdict(text, "source") is None  # a stage-2 category never rejects in stage 1


@pytest.mark.parametrize(
    "text",
    [
        "警方破获特大网络赌博案 抓获犯罪嫌疑人32名",  # news about the same words
        "禁毒宣传海报 珍爱生命 远离毒品",  # public service
        "扫黄打非专项行动 查处色情网站",
        "税务局严厉打击虚开发票行为",
        "血腥玛丽鸡尾酒的调制方法",  # allowed phrases
        "大麻哈鱼洄游季节",
        "金枪鱼刺身拼盘",
        "周末带孩子去溜冰场溜冰",
        "java av 线材",  # Latin terms only at token boundaries: no "av" inside "java"; "av" alone is weak
        "手机壳 华为mate60pro",  # a model number is no contact handle
        "客服热线400-800-1234",
        "床上用品四件套 纯棉",
    ],
)
def test_context_and_look_alikes_stay_safe(text):
    assert _verdict(text, "source") is None and _verdict(text, "text") is None


def test_context_does_not_clear_a_caption_that_solicits():
    """Spam dressed as news: a contact handle or sales cue keeps the score."""
    assert _verdict("警方提醒 网络赌场 注册送彩金 加微信abc123", "source") == "gambling"
    s = _lexicon().score(["警方破获特大网络赌博案"], "source")[0]
    assert s.category == "gambling" and s.score == pytest.approx(0.3) and "ctx:警方" in s.evidence


def test_contact_cues_and_context_strength():
    """Context clearing is graded: a court or police event (判处, 缴获) clears a caption that uses sales words, as news
    about a sale does ("非法出售"); a lone generic word (提醒) does not clear one that sells; a way to reach the seller
    ([contact]: 私聊, 货到付款, a handle) is never cleared; a weak context word alone (比赛) clears nothing."""
    assert _verdict("男子非法出售仿真枪被判处有期徒刑", "source") is None
    assert _verdict("警方缴获一批出售的仿真枪", "source") is None
    assert _verdict("提醒 仿真枪 出售 正品", "source") == "weapons"
    assert _verdict("警方 同款 仿真枪 出售 私聊", "source") == "weapons"
    assert _verdict("民警 推荐 甩棍 货到付款", "source") == "weapons"
    s = _lexicon().score(["比赛 赌博"], "source")[0]
    assert s.score == 1.0 and "ctx:" not in s.evidence


@pytest.mark.parametrize(
    "text, category",
    [
        ("再来闹事我就弄死你", "violence"),  # a killing verb aimed at "you" is a threat
        ("等着，迟早砍死他全家", "violence"),
        ("见一个砍一个", "violence"),
        ("今晚炸了那个商场", "violence"),
        ("人肉出她的住址", "violence"),  # doxxing
        ("号召圣战", "violence"),
        ("真实处决现场录像", "violence"),  # gore footage without 血腥
        ("有意者加飞机 @shop8899", "spam"),  # Telegram handle
        ("q群 12345678", "spam"),
        ("私我有惊喜", "spam"),
        ("关注转发抽三位送耳机", "spam"),  # giveaway
        ("透视睡衣真人秀", "suggestive"),
        ("fuli图 每日更新", "suggestive"),  # pinyin 福利
        ("请立即将资金转入安全账户", "fraud"),  # safe-account scam: the payment instruction blocks the context
    ],
)
def test_round4_families(text, category):
    stage = _lexicon().stages[category]
    assert _verdict(text, stage) == category


@pytest.mark.parametrize(
    "text",
    [
        "电影《让子弹飞》影评：枪战戏份",  # reviews are context
        "小说读后感：他最后杀了他",  # "him" as target needs company
        "打死我也想不到",  # idiom
        "秒杀你的钱包",
        "炸鸡店开在学校门口",
        "刑法第一百二十五条：非法买卖枪支罪解读",  # law text is context
        "京东客服电话950618",  # official service numbers are no contact handle
        "中国移动客服热线10086",
        "如何添加微信好友：输入对方手机号或微信号",  # messaging how-to
        "下单后可私聊客服修改地址",
        "柠檬罂粟籽玛芬",  # poppy-seed baking
        "盲盒开盒视频",  # unboxing, not doxxing
        "纸飞机折法",
        "公安机关提醒：所谓安全账户都是诈骗",
    ],
)
def test_round4_look_alikes_stay_safe(text):
    assert _verdict(text, "source") is None and _verdict(text, "text") is None


def test_single_han_characters_are_weak_terms(tmp_path):
    """枪, 弩, 赌 alone are weak (weight <= 0.5): they flag with a sales cue, count only where no longer term covers
    them (手枪 is one match), and [allow] phrases (水枪, 筋膜枪) hide them."""
    assert _verdict("枪 出售 全国 发货", "source") == "weapons"
    assert _verdict("枪", "source") is None and _verdict("弩", "source") is None
    assert _verdict("筋膜枪 出售 全国 发货", "source") is None
    assert _verdict("儿童 水枪 出售 包邮", "source") is None
    assert _lexicon().explain("手枪")["weapons"][1] == ["手枪"]
    with pytest.raises(ValueError, match="fewer than two"):
        SafetyClassifier(_write(tmp_path / "lex.txt", "[categories]\nx source\n[x]\n色 0.6\n"))
    clf = SafetyClassifier(_write(tmp_path / "lex2.txt", "[categories]\nx source\n[x]\n色 0.4\n色情\n[cue:x]\n出售 0.5\n"))
    assert clf.explain("色情 出售")["x"][1] == ["色情", "cue:出售"]
    assert clf.explain("出售 色")["x"][0] == pytest.approx(0.7)


def test_skeleton_and_fold():
    assert skeleton(fold("色*情 視頻 ＡＶ")) == "色情视频av"
    assert skeleton(fold("java av")) == "java av"  # a space stays between two Latin tokens
    assert skeleton(fold("+v 加 v")) == "加v加v"
    assert skeleton(fold(None)) == "" and skeleton(fold("\ud800")) == ""


def test_score_repeats_bad_inputs_and_stage_names():
    clf = default_classifier()
    out = clf.score(["赌博网站", None, "", "\ud800赌博", b"\xe8\xb5\x8c\xe5\x8d\x9a", "赌博网站"], "source")
    assert [s.category for s in out] == ["gambling", None, None, "gambling", "gambling", "gambling"]
    assert out[1] == SafetyScore(0.0, None, "")
    with pytest.raises(ValueError, match="stage must be one of"):
        clf.score(["x"], "image")


@pytest.mark.parametrize(
    "body, message",
    [
        ("[sexual]\n色情\n", "missing from \\[categories\\]"),
        ("色情\n", "outside a section"),
        ("[categories]\nsexual stage3\n", "expected 'category stage'"),
        ("[categories]\nx source\n[x]\n色情 2.0\n", "outside \\(0, 1\\]"),
        ("[categories]\nx source\n[x]\n色情 abc\n", "is not a number"),
        ("[categories]\nx source\n[x]\n色\n", "fewer than two"),
        ("[categories]\nx source\n[x]\nre:bad\t(unclosed\t0.5\n", "bad regular expression"),
        ("[categories]\nx source\n[x]\nre:nolabel\n", "expected 're:name"),
        ("[categories]\nx source\n[context]\n警方\n", "has no terms"),
    ],
)
def test_safety_lexicon_errors_name_the_line(tmp_path, body, message):
    with pytest.raises(ValueError, match=message):
        SafetyClassifier(_write(tmp_path / "lex.txt", body))


def test_safety_lexicon_missing_and_not_utf8(tmp_path):
    with pytest.raises(FileNotFoundError):
        SafetyClassifier(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("[categories]\ncaf\xe9 source\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        SafetyClassifier(bad)
    with pytest.raises(ValueError, match="threshold"):
        SafetyClassifier(threshold=0.0)


def test_stage_scores_for_plugins_without_score():
    class Binary:
        name = "binary"

        def predict(self, texts):
            return [("坏" in t, "坏" if "坏" in t else None) for t in texts]

    assert stage_scores(Binary(), ["好", "坏人"], "source") == [SafetyScore(0.0, None, ""),
                                                               SafetyScore(1.0, "unsafe", "坏")]
    assert stage_scores(Binary(), ["好", "坏人"], "text") == [SafetyScore(0.0, None, "")] * 2

    class BadScore:
        name = "bad"

        def predict(self, texts):
            return [(False, None) for _ in texts]

        def score(self, texts, stage):
            return [SafetyScore(float("nan"), None, "") for _ in texts]

    with pytest.raises(ValueError, match="not a SafetyScore"):
        stage_scores(BadScore(), ["x"], "source")


def test_targets_on_the_independent_evaluation_set():
    """The issue's targets - unsafe recall >= 0.9 overall and >= 0.8 per category, false positives on safe captions
    (look-alikes included) <= 2 % - with the shipped classifier, on every evaluation split: the ones the lexicon or the
    model was tuned or trained on (orig's halves, fresh1-6, tune3-5) and fresh7, written blind and never trained or
    calibrated on (its first score, 0.95 / 0 of 140, is in its header)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_safety.py"
    spec = importlib.util.spec_from_file_location("bench_safety", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    fresh = ("fresh1", "fresh2", "tune3", "fresh3", "tune4", "fresh4", "tune5", "fresh5", "fresh6", "fresh7")
    cases = bench.load_cases() + [c for name in fresh for c in bench.load_cases(bench.FRESH_SETS[name], split=name)]
    assert len(cases) >= 2000 and {c["split"] for c in cases} == {"tune", "heldout", *fresh}
    assert set(bench.HELD_OUT) == {"fresh7"} and "fresh7" not in default_classifier().model.trained_on
    for split in ("tune", "heldout", *fresh):
        r = bench.evaluate(default_classifier(), [c for c in cases if c["split"] == split])
        assert r["recall"] is None if split == "tune3" else r["recall"] >= 0.9, (split, r["misses"])
        assert r["fp_rate"] <= 0.02, (split, [c["caption"] for c in r["fp"]])
        for cat, row in r["per"].items():
            assert row["n"] == 0 or row["recall"] >= 0.8, (split, cat, row)


@pytest.mark.parametrize("text", [
    "本周新到一批茶艺师 可飞 可过夜", "加州叶子 到货 飞一下", "四号货 纯度95 老客户优先", "出狗粮 快递到家",
    "出qiang 面交 可验货", "钥匙扣造型电击棒 隐蔽好带", "【农业银行】您的积分即将清零 请点击链接兑换",
    "你好我是拼多多客服 为您办理退款", "USDT承兑 不问来源", "我是民警 你涉嫌洗钱 请配合转入安全账户",
    "我换了新号 有急用 先转账给我", "这帮人全都杀了", "蓝鲸挑战 第十天", "明天炸了这个破公司",
    "丁字裤 翘臀 私房", "绅士向 本子 高清", "资料私信我 免费发", "转发到三个群 就送会员", "评论区扣1 私信你链接",
])
def test_round5_families_flag(text):
    clf = _lexicon()
    assert max(clf.score([text], "source")[0].score, clf.score([text], "text")[0].score) >= 0.5, clf.explain(text)


@pytest.mark.parametrize("text", [
    "火药是中国古代四大发明之一", "SK-II神仙水 护肤精华", "牙科 笑气镇静 拔牙不疼", "冰箱维修上门服务",
    "网吧包夜 送饮料", "加拿大大麻合法化的社会影响", "冷知识 可口可乐配方曾含可卡因", "治安管理处罚法 卖淫嫖娼 处罚规定",
    "狗粮 成犬 包邮", "黄金 纯度99.9", "止咳水 儿童 正品", "明前新茶 品茶", "深夜放毒 炸鸡",
])
def test_round5_lookalikes_pass(text):
    clf = _lexicon()
    assert max(clf.score([text], "source")[0].score, clf.score([text], "text")[0].score) < 0.5, clf.explain(text)


def test_load_text_safety_classifier_plugin(tmp_path, monkeypatch):
    _write(
        tmp_path / "my_safety_plugin.py",
        """\
        class LengthClassifier:
            name = "length"

            def predict(self, texts):
                return [(len(t) > 5, f"len={len(t)}") for t in texts]


        class Broken:
            def __init__(self):
                raise RuntimeError("model weights missing")


        class NoPredict:
            name = "nope"


        NOT_CALLABLE = 3
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    clf = load_text_safety_classifier("my_safety_plugin:LengthClassifier")
    assert clf.name == "length"
    assert run_classifier(clf, ["短", "这是一个很长的句子", None]) == [
        (False, "len=1"),
        (True, "len=9"),
        (False, "len=0"),
    ]
    with pytest.raises(ValueError, match="model weights missing"):
        load_text_safety_classifier("my_safety_plugin:Broken")
    with pytest.raises(TypeError, match="does not implement TextSafetyClassifier"):
        load_text_safety_classifier("my_safety_plugin:NoPredict")
    with pytest.raises(ValueError, match="not a class"):
        load_text_safety_classifier("my_safety_plugin:NOT_CALLABLE")
    with pytest.raises(ValueError, match="has no attribute 'Missing'"):
        load_text_safety_classifier("my_safety_plugin:Missing")


@pytest.mark.parametrize("spec", ["", "   ", "lexicon:", "lexicon:  ", "safety:", "lexicon", "nonsense", ":Cls", "module:", None])
def test_load_text_safety_classifier_bad_specs(spec):
    with pytest.raises(ValueError, match="expected"):
        load_text_safety_classifier(spec)


def test_load_text_safety_classifier_import_error():
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        load_text_safety_classifier("no_such_module_xyz:Classifier")


def test_run_classifier_checks_the_contract():
    class WrongLength:
        name = "wrong_length"

        def predict(self, texts):
            return [(False, None)]

    class Malformed:
        name = "malformed"

        def predict(self, texts):
            return [True for _ in texts]

    with pytest.raises(ValueError, match="1 answers for 2 texts"):
        run_classifier(WrongLength(), ["a", "b"])
    with pytest.raises(ValueError, match="not \\(bool, str \\| None\\)"):
        run_classifier(Malformed(), ["a"])
    assert run_classifier(default_classifier(), ["赌博网站", "好"]) == [(True, "gambling:赌博"), (False, None)]


_MODEL_LEXICON = "[categories]\nsexual source\nspam text\n[sexual]\n色情\n[spam]\n加微信\n"


def _tiny_model(**overrides):
    """A model in the shipped format with hand-set weights (chars view, idf 1): 猫 is unsafe (sexual), 新闻 is safe,
    广告 is spam; P(unsafe) of a text with none of them is sigmoid(-2) = 0.12."""
    data = {"format": "danqing-safety-charngram-2", "threshold": 0.6, "veto": 0.4, "window": [4, 2],
            "min_distinct": 3, "views": ["chars"], "intercept": -2.0, "categories": ["sexual", "spam"],
            "cat_intercept": [0.0, 0.0], "trained_on": ["hand-set"],
            "features": {"chars": {"猫": [1.0, 6.0, 2.0, 0.0], "新闻": [1.0, -6.0, 0.0, 0.0],
                                   "广告": [1.0, 6.0, 0.0, 3.0]}}}
    data.update(overrides)
    return data


def _model_file(tmp_path, data, name="model.json"):
    import json

    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_the_model_clears_flags_and_judges_a_pasted_ad_on_its_own_window(tmp_path):
    """The fusion rule of `SafetyClassifier._second_opinion`, on a model whose probabilities are computed by hand."""
    from danqing_assets.lib.safety import CharNgramModel

    clf = SafetyClassifier(_write(tmp_path / "lex.txt", _MODEL_LEXICON), model=_model_file(tmp_path, _tiny_model()))
    m = clf.model
    assert m.predict("猫咪图片") == (pytest.approx(1 / (1 + math.exp(-4))), "sexual")
    assert m.unsafe_probability("今天天气") == pytest.approx(1 / (1 + math.exp(2)))
    assert m.flag("猫咪图片")[1] == "sexual" and m.flag("今天天气") == (pytest.approx(1 / (1 + math.exp(2))), None)
    # 新闻 x3 (tf 1 + ln 3) and 猫 x1, L2-normalised: the whole caption is safe, its last window is not
    z = -2 + (-6 * (1 + math.log(3)) + 6) / math.hypot(1 + math.log(3), 1)
    assert m.unsafe_probability("新闻新闻新闻色情猫") == pytest.approx(1 / (1 + math.exp(-z)))
    assert m.local_probability("新闻新闻新闻色情猫") == pytest.approx(1 / (1 + math.exp(-4)))  # window "色情猫"
    # the lexicon flags 色情; the model clears it in a news caption (score x context_factor) ...
    assert clf.explain("新闻色情") == {"sexual": (0.3, ["色情", "model-cleared:0.00"])}
    # ... not where an unsafe window follows ordinary text, nor in a caption too short to judge (2 distinct < 3)
    assert clf.explain("新闻新闻新闻色情猫") == {"sexual": (1.0, ["色情", "model:0.98"])}
    assert clf.explain("色情") == {"sexual": (1.0, ["色情"])}
    # the model flags alone (score 0.5 + 0.5 (p - t) / (1 - t)), in its most likely category and that category's stage
    p = 1 / (1 + math.exp(-4))
    assert clf.explain("猫咪图片") == {"sexual": (round(0.5 + 0.5 * (p - 0.6) / 0.4, 4), ["model:0.98"])}
    assert clf.score(["猫咪图片"], "source")[0].category == "sexual" and clf.score(["猫咪图片"], "text")[0].score == 0.0
    assert clf.explain("看广告领红包")["spam"][1] == ["model:0.98"] and clf.score(["看广告领红包"], "text")[0].score >= 0.5
    assert clf.explain("猫猫") == {} and clf.explain("今天天气真好") == {}  # too few distinct characters; p 0.12
    assert CharNgramModel(_tiny_model()).trained_on == ("hand-set",)


def test_the_cut_off_search_decides_as_the_classifier_does(tmp_path):
    """bench_safety.fused_flags (the vectorised rule the model's cut-offs are chosen with) flags exactly the captions
    the classifier with that model flags."""
    import importlib.util
    from pathlib import Path

    import numpy as np

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_safety.py"
    spec = importlib.util.spec_from_file_location("bench_safety", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lex_path = _write(tmp_path / "lex.txt", _MODEL_LEXICON)
    fused = SafetyClassifier(lex_path, model=_model_file(tmp_path, _tiny_model()))
    lexicon, m = SafetyClassifier(lex_path), fused.model
    captions = ["新闻色情", "新闻新闻新闻色情猫", "色情", "猫咪图片", "看广告领红包", "猫猫", "今天天气真好", "加微信看新闻",
                "新闻里的猫", "色情色情色情", "新闻新闻新闻新闻加微信"]
    sks = [fused.matching_form(c) for c in captions]
    lex = np.array([max(s.score for s in (lexicon.score([c], "source")[0], lexicon.score([c], "text")[0]))
                    for c in captions])
    flags = bench.fused_flags(np.array([m.unsafe_probability(sk) for sk in sks]),
                              np.array([m.local_probability(sk) for sk in sks]), np.array([len(set(sk)) for sk in sks]),
                              lex, m.veto, m.threshold, min_distinct=m.min_distinct)
    truth = [max(s.score for s in (fused.score([c], "source")[0], fused.score([c], "text")[0])) >= 0.5
             for c in captions]
    assert list(flags) == truth and 0 < sum(truth) < len(truth)


def test_the_syllable_view_reads_homophones_as_one_feature(tmp_path):
    """A model over the pinyin-syllable view (`MODEL_VIEWS`) gives 菠菜 (bocai) the weight it learned for 博彩."""
    from danqing_assets.lib.safety import CharNgramModel, _view

    key = _view("博彩", "syllables")
    assert len(key) == 2 and key == _view("菠菜", "syllables") != _view("白菜", "syllables")
    m = CharNgramModel(_tiny_model(views=["syllables"], features={"syllables": {key: [1.0, 6.0, 0.0, 1.0]}}))
    assert m.predict("菠菜平台") == (pytest.approx(1 / (1 + math.exp(-4))), "spam")
    assert m.unsafe_probability("白菜平台") == pytest.approx(1 / (1 + math.exp(2)))


@pytest.mark.parametrize("overrides, message", [
    ({"format": "danqing-safety-charngram-1"}, "not a danqing-safety-charngram-2"),
    ({"veto": None}, "malformed"),
    ({"veto": 0.7}, "veto 0.7"),  # above the threshold
    ({"threshold": 1.0}, "threshold 1.0"),
    ({"window": [2, 4]}, "malformed"),  # stride above the window
    ({"window": "12"}, "malformed"),
    ({"views": ["words"]}, "unknown view"),
    ({"views": []}, "malformed"),
    ({"features": {"chars": {"猫": [1.0, 6.0]}}}, "has 2 values, expected 4"),
    ({"features": {}}, "malformed"),
    ({"intercept": float("nan")}, "malformed"),
])
def test_malformed_models_are_refused_with_the_reason(tmp_path, overrides, message):
    from danqing_assets.lib.safety import CharNgramModel

    with pytest.raises(ValueError, match=message):
        CharNgramModel.load(_model_file(tmp_path, _tiny_model(**overrides)))


def test_model_files_that_cannot_be_read_and_models_with_unknown_categories(tmp_path):
    from danqing_assets.lib.safety import CharNgramModel

    with pytest.raises(FileNotFoundError):
        CharNgramModel.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_bytes(b"\xff{")
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        CharNgramModel.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON object"):
        CharNgramModel.load(tmp_path / "list.json")
    lexicon = _write(tmp_path / "lex.txt", "[categories]\nsexual source\n[sexual]\n色情\n")
    with pytest.raises(ValueError, match="categories \\['spam'\\] are missing from the lexicon"):
        SafetyClassifier(lexicon, model=_model_file(tmp_path, _tiny_model()))


def test_the_shipped_classifier_is_lexicon_and_model():
    """Spec "safety" (both stages' default) is the shipped lexicon with the shipped model, trained on the written
    training sets and calibrated on the lexicon-blind ones; "safety-lexicon" and "safety:/path" have no model."""
    from danqing_assets.lib.safety import DEFAULT_SAFETY_MODEL

    clf = load_text_safety_classifier("safety")
    assert clf is default_classifier() and clf.model is not None and clf.model.source == str(DEFAULT_SAFETY_MODEL)
    assert {"w1", "w2", "w3", "w4", "w5", "w6", "w7", "o1", "o2", "o3", "fresh5"} <= set(clf.model.trained_on)
    assert "fresh6" in clf.model.trained_on and "fresh7" not in clf.model.trained_on  # fresh7: scored once, blind
    assert 0.0 < clf.model.veto <= clf.model.threshold < 1.0 and clf.model.views == ("chars",)
    assert load_text_safety_classifier("safety-lexicon").model is None and SafetyClassifier().model is None
    assert default_classifier(model=False) is load_text_safety_classifier("safety-lexicon")
    assert DEFAULT_SAFETY_MODEL.read_text(encoding="utf-8").startswith('{"about":')
    # the planted snippets of the sample crawl, alone and pasted into the ordinary text around them
    for text in ["出售仿真枪钢珠枪可发射", "地铁旁边的三只松鼠，哈尔滨中午的沙拉，出售仿真枪钢珠枪可发射地铁",
                 "代刷粉丝点赞播放量珠海深夜的公园，健康轮船特写，杂志与乌龟", "信用卡套现秒到账"]:
        assert max(s.score for s in (clf.score([text], "source")[0], clf.score([text], "text")[0])) >= 0.5, \
            clf.explain(text)


def test_the_shipped_classifier_keeps_ordinary_text():
    """Captions of the sample crawl that an earlier model, trained without ordinary text, flagged at p ~0.97: English
    alt text, repeated words, Chinese filler, scene descriptions."""
    ordinary = [
        "View of the old town with a lake, view of the old town with a flower",
        "A wooden statue sitting in a small village during the festival",
        "现货现货现货现货现货现货现货现货现货现货☆☆☆",
        "我们马上购买了，他们觉得再简单，又分享过，轻轻明亮地购买，她们都渐渐等待",
        "现场图：画面的左边，一个黑色的蘑菇出现在桌面上，画面右侧有一个雪白色的小球，（资料图），可免费下载",
    ]
    clf = default_classifier()
    for stage in ("source", "text"):
        assert [s.score < 0.5 for s in stage_scores(clf, ordinary, stage)] == [True] * len(ordinary)
