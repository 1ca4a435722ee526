"""Text-safety classifier: the shipped SafetyClassifier (evasions, context, categories per stage) on real captions,
its lexicon loader, the plug-in interface, and the targets on the independent evaluation set."""

from __future__ import annotations

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


# --- the shipped classifier on real captions --------------------------------------------------------------------------


def _verdict(text, stage="source"):
    s = default_classifier().score([text], stage)[0]
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
    s = default_classifier().score(["警方破获特大网络赌博案"], "source")[0]
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
    s = default_classifier().score(["比赛 赌博"], "source")[0]
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
    stage = default_classifier().stages[category]
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
    assert default_classifier().explain("手枪")["weapons"][1] == ["手枪"]
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
    """The issue's targets, on the hand-written evaluation sets (tuned and md5-held-out cases both, the first fresh set,
    tuned on in round 2, the second, tuned on in round 3, the round-3 safe look-alikes, the third, written blind and
    tuned on in round 4, the round-4 probes and look-alikes, the fourth, written blind and tuned on in round 5, and the
    round-5 probes and look-alikes): unsafe recall >= 0.9
    overall and >= 0.8 per category, false positives on safe captions (look-alikes included) <= 2 %. Every split here
    has been tuned on; generalisation is measured by the blind sets the lead adds to benchmarks/bench_safety.py."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_safety.py"
    spec = importlib.util.spec_from_file_location("bench_safety", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    splits = ("tune", "heldout", "fresh1", "fresh2", "tune3", "fresh3", "tune4", "fresh4", "tune5")
    cases = bench.load_cases() + [c for name in splits[2:] for c in bench.load_cases(bench.FRESH_SETS[name], split=name)]
    assert len(cases) >= 1000 and {c["split"] for c in cases} == set(splits)
    for split in splits:
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
    clf = default_classifier()
    assert max(clf.score([text], "source")[0].score, clf.score([text], "text")[0].score) >= 0.5, clf.explain(text)


@pytest.mark.parametrize("text", [
    "火药是中国古代四大发明之一", "SK-II神仙水 护肤精华", "牙科 笑气镇静 拔牙不疼", "冰箱维修上门服务",
    "网吧包夜 送饮料", "加拿大大麻合法化的社会影响", "冷知识 可口可乐配方曾含可卡因", "治安管理处罚法 卖淫嫖娼 处罚规定",
    "狗粮 成犬 包邮", "黄金 纯度99.9", "止咳水 儿童 正品", "明前新茶 品茶", "深夜放毒 炸鸡",
])
def test_round5_lookalikes_pass(text):
    clf = default_classifier()
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


def test_learned_second_opinion(tmp_path):
    """The shipped model is loaded with the shipped lexicon, decides only where the lexicon did not (evidence
    "model:p"), is cleared by context, and a malformed model file is refused."""
    from danqing_assets.lib.safety import DEFAULT_SAFETY_MODEL, CharNgramModel, SafetyClassifier

    assert default_classifier().model is None and SafetyClassifier().model is None  # off unless asked for
    clf = load_text_safety_classifier("safety+model")
    assert clf is default_classifier(model=True)
    assert clf.model is not None and "fresh4" in clf.model.trained_on and 0.5 < clf.model.threshold < 1.0
    assert SafetyClassifier(model=False).model is None
    sk = clf.matching_form("出qiang 可验货")
    assert 0.0 <= clf.model.unsafe_probability(sk) <= 1.0 and clf.model.category(sk) in clf.stages
    # a caption the model flags alone carries "model:" in its evidence and scores >= 0.5
    for text in ["高仿证件 各类 办理", "今晚 一起 嗨 到天亮 货 到付款"]:
        ex = clf.explain(text)
        for sc, ev in ex.values():
            if any(e.startswith("model:") for e in ev):
                assert sc >= 0.5
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a danqing-safety-charngram-1"):
        CharNgramModel.load(bad)
    with pytest.raises(FileNotFoundError):
        CharNgramModel.load(tmp_path / "missing.json")
    assert DEFAULT_SAFETY_MODEL.read_text(encoding="utf-8").startswith('{"about":')


def test_default_classifier_keeps_ordinary_text_the_model_flagged():
    """Captions of the sample crawl that the learned second opinion flagged at p ~0.97 (why it is off by default):
    the default classifier keeps them; the lexicon alone does not mistake them."""
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
