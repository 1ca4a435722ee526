"""Benchmark the caption text library: stage-2 scoring against bare jieba, caption dedup scaling (MinHash LSH and the
one-edit rule) and the near-duplicate merge rates on the evaluation set (danqing_assets_tests/lib/neardup_eval.py).

    .venv/bin/python benchmarks/bench_text.py            # 100 k captions scored; dedup on 100 k and 1 M
    .venv/bin/python benchmarks/bench_text.py --n 20000  # smaller: score 20 k, dedup 20 k and 200 k

Captions are generated from word banks (products, travel, food, news, home, people) in the shapes seen in web alt text:
site suffixes ("_XX商城", " - 百度图片"), emoji, Traditional script, English brand names, HTML entities, URLs, a few
spam / repetition captions, and ~30 % exact repeats (the same alt text on many pages).

Times are process CPU seconds (`time.process_time`), so the figures are captions per CPU-second, i.e. per core, and
stay meaningful on a shared, loaded machine; both sides run in the same process on the same captions, alternating,
best of `--rounds`.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

BRANDS = ["Apple", "华为", "小米", "Nike", "李宁", "安踏", "优衣库", "美的", "格力", "海尔", "OPPO", "vivo", "联想",
          "戴尔", "佳能", "索尼", "百雀羚", "兰蔻", "雅诗兰黛", "三只松鼠", "良品铺子", "蒙牛", "伊利", "波司登"]
PRODUCTS = ["手机壳", "连衣裙", "运动鞋", "笔记本电脑", "蓝牙耳机", "空气炸锅", "羽绒服", "双肩包", "保温杯", "机械键盘",
            "电饭煲", "面霜", "口红", "坚果礼盒", "儿童玩具", "茶具套装", "沙发", "床垫", "落地灯", "行李箱", "智能手表"]
ATTRS = ["2024新款", "夏季", "加厚", "轻薄", "大容量", "男女同款", "韩版", "复古", "简约", "高端", "正品", "北欧风",
         "纯棉", "防水", "静音", "便携式", "多功能", "ins风", "网红同款", "黑色", "白色", "粉色", "ins"]
PLACES = ["北京", "上海", "杭州", "成都", "西安", "厦门", "桂林", "丽江", "三亚", "苏州", "青岛", "重庆", "拉萨",
          "张家界", "黄山", "九寨沟", "乌镇", "大理", "哈尔滨", "香港", "台北"]
SIGHTS = ["故宫", "西湖", "外滩", "长城", "兵马俑", "鼓浪屿", "漓江", "洱海", "布达拉宫", "天坛", "颐和园", "宽窄巷子",
          "洪崖洞", "中山陵", "维多利亚港", "日月潭", "雪山", "古镇", "博物馆", "夜景"]
SCENES = ["的美丽风景", "夜景灯光璀璨", "秋天的红叶", "冬日雪景", "日出时分", "游客络绎不绝", "航拍全景图", "春暖花开",
          "雨后的街道", "古老的建筑"]
FOODS = ["红烧肉", "宫保鸡丁", "麻婆豆腐", "小笼包", "火锅", "北京烤鸭", "糖醋排骨", "酸菜鱼", "蛋炒饭", "担担面",
         "水煮鱼", "回锅肉", "芒果布丁", "提拉米苏", "抹茶蛋糕"]
FOOD_TAILS = ["的家常做法", "的做法步骤图", "色香味俱全", "制作教程", "简单易学", "美味可口", "图片大全"]
NEWS_SUBJ = ["市民", "志愿者", "工作人员", "运动员", "学生们", "游客", "消防员", "医护人员", "农民", "专家"]
NEWS_VERB = ["在广场上参加活动", "正在清理道路积雪", "在赛场上奋力拼搏", "参观科技展览", "收割成熟的稻谷",
             "在社区开展义诊", "观看文艺演出", "体验传统文化", "进行消防演练", "参加开学典礼"]
HOME = ["客厅装修效果图", "卧室设计", "厨房收纳技巧", "阳台花园", "儿童房布置", "北欧风格餐厅", "小户型改造"]
PEOPLE = ["可爱的小女孩", "帅气的男明星", "时尚女装模特", "老人在公园下棋", "一家人吃团圆饭", "小朋友放风筝",
          "新娘婚纱照", "篮球运动员扣篮"]
SUFFIXES = ["_淘宝网", "-京东商城", " - 百度图片", "|新浪新闻", "_美食天下网", "-马蜂窝", "_太平洋电脑网",
            "｜网易新闻", "_搜狐网", "-汽车之家论坛"]
EMOJI = ["🔥", "😍", "🌸", "👍", "❤️", "✨", "🎉", "😂", "🐱", "⭐"]
TRAD = str.maketrans("图华为简约红烧肉鸡丁设计装修厨房儿童运动鞋连衣裙长城兵马俑风景夜景灯光专家医护人员参观",
                     "圖華為簡約紅燒肉雞丁設計裝修廚房兒童運動鞋連衣裙長城兵馬俑風景夜景燈光專家醫護人員參觀")
SPAM = ["🔥🔥🔥!!!【特价】【特价】【特价】~~~~###", "好好好好好好好好好好", "★★★★★☆☆☆☆☆", "=====>>>>>点击<<<<<=====",
        "买买买买买买买", "😂😂😂😂😂😂", "IMG_20240101_123456.jpg", "http://www.example.com/a/b/c.html", "&nbsp;&nbsp;"]


def _fragment(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.30:
        c = f"{rng.choice(BRANDS)} {rng.choice(ATTRS)}{rng.choice(ATTRS)}{rng.choice(PRODUCTS)}"
        if rng.random() < 0.5:
            c += f" {rng.choice(ATTRS)} {rng.randint(2, 99)}件套"
    elif kind < 0.50:
        c = f"{rng.choice(PLACES)}{rng.choice(SIGHTS)}{rng.choice(SCENES)}"
        if rng.random() < 0.5:
            c += f"，{rng.choice(PLACES)}旅游攻略{rng.choice(['', '推荐', '必去景点'])}"
    elif kind < 0.62:
        c = f"{rng.choice(FOODS)}{rng.choice(FOOD_TAILS)}"
    elif kind < 0.80:
        c = f"{rng.randint(1, 12)}月{rng.randint(1, 28)}日，{rng.choice(PLACES)}的"
        c += f"{rng.choice(NEWS_SUBJ)}{rng.choice(NEWS_VERB)}"
        if rng.random() < 0.4:
            c += f"。新华社记者 {rng.choice(['王', '李', '张', '刘', '陈'])}{rng.choice(['伟', '芳', '敏', '静', '磊'])} 摄"
    elif kind < 0.90:
        c = f"{rng.choice(HOME)}{rng.choice(['', '图片', '实景图'])} {rng.choice(ATTRS)}{rng.choice(HOME)}"
    else:
        c = f"{rng.choice(PEOPLE)}{rng.choice(['', '高清图片', '写真', '壁纸'])}"
    return c


def _caption(rng: random.Random) -> str:
    """One alt text: 1-5 fragments (about 4-60 jieba words, ~20 on average) plus, sometimes, web decoration."""
    if rng.random() < 0.03:
        return rng.choice(SPAM)
    c = "，".join(_fragment(rng) for _ in range(rng.choice((1, 2, 3, 3, 4, 5))))
    r = rng.random()
    if r < 0.15:
        c += rng.choice(SUFFIXES)
    elif r < 0.25:
        c += "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3)))
    elif r < 0.30:
        c = c.translate(TRAD)
    elif r < 0.32:
        c = c.replace("，", "&nbsp;") + " &amp; 更多"
    elif r < 0.33:
        c += " www.example.com"
    return c


def make_captions(n: int, *, repeat_share: float = 0.26, seed: int = 0) -> list[str]:
    """`n` captions: `repeat_share` drawn again from earlier ones (popular alt texts repeat more), plus the repeats
    that the word banks produce by chance: ~30 % exact repeats in all at the default."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < repeat_share:
            out.append(out[int(len(out) * rng.random() ** 2)])  # skewed towards early (popular) captions
        else:
            out.append(_caption(rng))
    return out


def make_dedup_captions(n: int, *, seed: int = 1) -> list[str]:
    """Captions for the dedup benchmark: unique-ish sentences, ~20 % near-duplicate variants (a character changed,
    a suffix added) and ~10 % exact repeats."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(n):
        r = rng.random()
        if out and r < 0.10:
            out.append(out[rng.randrange(len(out))])
        elif out and r < 0.30:
            base = out[rng.randrange(len(out))]
            if len(base) > 12 and rng.random() < 0.5:
                k = rng.randrange(len(base))
                out.append(base[:k] + rng.choice("的了是和在") + base[k + 1 :])
            else:
                out.append(base + rng.choice(["!", "。", " 图", " 高清"]))
        else:
            out.append(f"{_caption(rng)} {i}{rng.choice(PLACES)}{rng.choice(PRODUCTS)}")
    return out


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s"


def bench_scoring(n: int, rounds: int = 3) -> None:
    import jieba

    from danqing_assets.lib import text

    jieba.setLogLevel(logging.WARNING)
    caps = make_captions(n)
    distinct = len(set(caps))
    # Warm up every lazy resource (jieba dictionary, POS table, vocabulary, OpenCC, lingua models, regexes).
    text.score_captions(caps[:2000])
    jieba.lcut("预热")

    def run_jieba(xs: list[str]) -> float:
        t0 = time.process_time()
        for c in xs:
            jieba.lcut(c)
        return time.process_time() - t0

    def run_score(xs: list[str]) -> float:
        t0 = time.process_time()
        text.score_captions(xs)
        return time.process_time() - t0

    # The machine is shared: alternate the two sides and keep each side's best of `rounds`.
    uniq = list(dict.fromkeys(caps))
    t_jieba = t_score = t_jieba_uniq = t_score_uniq = float("inf")
    for _ in range(rounds):
        t_jieba = min(t_jieba, run_jieba(caps))
        t_score = min(t_score, run_score(caps))
        t_jieba_uniq = min(t_jieba_uniq, run_jieba(uniq))
        t_score_uniq = min(t_score_uniq, run_score(uniq))
    df = text.score_captions(caps)
    assert df.height == n

    print(f"scoring: {n:,} captions ({distinct:,} distinct, {1 - distinct / n:.0%} repeats), best of {rounds}")
    print(f"  bare jieba.lcut      {t_jieba:7.2f} s  {_rate(n, t_jieba)}")
    print(f"  score_captions       {t_score:7.2f} s  {_rate(n, t_score)}   "
          f"ratio {t_jieba / t_score:.2f} (target >= 0.8)")
    print(f"  distinct only: jieba {t_jieba_uniq:6.2f} s, score_captions {t_score_uniq:.2f} s, "
          f"ratio {t_jieba_uniq / t_score_uniq:.2f} (no help from repeats)")
    kept = df.filter(
        (df["language"] == "zho") & (df["noun_count"] >= 1) & (df["unk_count"] <= text.DEFAULT_MAX_UNK)
        & (df["entropy"] >= text.DEFAULT_MIN_ENTROPY) & (df["sensitive_score"] < 0.5)
    )
    print(f"  rows passing the default rules: {kept.height / n:.1%}")


def bench_dedup(n_small: int, n_large: int) -> None:
    from danqing_assets.lib.text_dedup import near_duplicate_clusters

    times = {}
    for n in (n_small, n_large):
        caps = make_dedup_captions(n)
        t0 = time.process_time()
        reps = near_duplicate_clusters(caps)
        times[n] = time.process_time() - t0
        dropped = sum(1 for i, r in enumerate(reps) if r != i)
        print(f"dedup: {n:>9,} captions  {times[n]:7.2f} s  {_rate(n, times[n])}  "
              f"({dropped / n:.1%} not representatives)")
    print(f"  time({n_large:,}) / time({n_small:,}) = {times[n_large] / times[n_small]:.2f} "
          f"(linear: {n_large / n_small:.0f})")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "danqing_assets_tests", "lib"))
    from neardup_eval import merge_rates

    r = merge_rates()
    kinds = ", ".join(f"{k} {v:.0%}" for k, v in r["by_kind"].items())
    print(f"near-duplicate evaluation set: one-edit variants merged {r['one_edit']:.1%} of {r['one_edit_n']} "
          f"(target >= 95 %; {kinds}); template-sharing pairs merged {r['template']:.1%} of {r['template_n']} "
          f"(target <= 2 %), {r['template_chained']:.1%} when all are clustered together (chains through third "
          f"captions)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="captions to score and the small dedup size (default 100k)")
    ap.add_argument("--dedup-factor", type=int, default=10, help="large dedup size = n x this (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds per side; the best is reported (default 3)")
    ap.add_argument("--skip-dedup", action="store_true")
    ap.add_argument("--skip-scoring", action="store_true")
    args = ap.parse_args(argv)
    if not args.skip_scoring:
        bench_scoring(args.n, args.rounds)
    if not args.skip_dedup:
        bench_dedup(args.n, args.n * args.dedup_factor)


if __name__ == "__main__":
    main()
