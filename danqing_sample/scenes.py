"""Scenes a model can learn from: simple drawable things on textured backgrounds, and Chinese captions that name them.

A `Scene` is a background plus one or two groups; a group is (thing, colour, count 1-4, position). `render_scene`
draws it with PIL primitives (a gradient backdrop with structure and dense texture, the things with outlines and
highlights, pixel noise), so every image is sharp, high-entropy and not flat, and `caption_for` describes it in varied
natural Chinese (many templates and word orders, synonyms, optional adjectives, product / news / blog / stock-photo
wrappers). The words of things, colours and backgrounds are chosen so that no surface form is a substring of another
kind's form unless the longer one wins a longest-match scan (`named_in`), which lets tests and evaluations parse a
caption back to the things and colours it names.

Nothing here reads files: the same scene and random streams give the same image and caption, on any machine (no
system font is used; see `render_poster`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

# ---------------------------------------------------------------------------------------------------------------------
# Vocabulary.

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Thing:
    key: str  # ascii id (class directory of the zero-shot set)
    name: str  # the Chinese class name
    synonyms: tuple[str, ...]  # other surface forms (the name included first in `forms`)
    measure: str  # measure word: 个 / 棵 / 辆 ...
    pinyin: str  # upper-case pinyin of `name`, printed on posters (no CJK font is assumed)

    @property
    def forms(self) -> tuple[str, ...]:
        return (self.name, *self.synonyms)


@dataclass(frozen=True)
class Colour:
    key: str
    name: str  # e.g. 红色
    variants: tuple[str, ...]  # other forms, every one ending in 色
    rgb: RGB
    pinyin: str

    @property
    def forms(self) -> tuple[str, ...]:
        return (self.name, *self.variants)


@dataclass(frozen=True)
class Background:
    key: str
    nouns: tuple[str, ...]  # 草地 / 草坪
    locatives: tuple[str, ...]  # 草地上 / 草坪上 (where something is; templates add 在)
    adjectives: tuple[str, ...]  # 柔软的 (never a colour or a thing word)
    clashes: frozenset[str]  # colours hard to see on it (never sampled there)


THINGS: tuple[Thing, ...] = (
    Thing("ball", "圆球", ("皮球", "小球"), "个", "YUANQIU"),
    Thing("box", "箱子", ("盒子", "方盒"), "个", "XIANGZI"),
    Thing("triangle", "三角形", (), "个", "SANJIAO"),
    Thing("star", "星星", ("五角星",), "颗", "XINGXING"),
    Thing("heart", "爱心", ("心形",), "颗", "AIXIN"),
    Thing("house", "房子", ("小屋", "房屋"), "座", "FANGZI"),
    Thing("tree", "大树", ("树木", "小树"), "棵", "DASHU"),
    Thing("car", "汽车", ("小汽车", "轿车"), "辆", "QICHE"),
    Thing("flower", "花朵", ("鲜花", "小花"), "朵", "HUADUO"),
    Thing("fish", "小鱼", ("鱼儿",), "条", "XIAOYU"),
    Thing("cup", "杯子", ("茶杯", "水杯"), "个", "BEIZI"),
    Thing("umbrella", "雨伞", (), "把", "YUSAN"),
    Thing("moon", "月亮", (), "个", "YUELIANG"),
    Thing("kite", "风筝", (), "只", "FENGZHENG"),
    Thing("sailboat", "帆船", ("小船",), "艘", "FANCHUAN"),
    Thing("mushroom", "蘑菇", (), "个", "MOGU"),
    Thing("balloon", "气球", (), "个", "QIQIU"),
    Thing("bird", "小鸟", ("鸟儿",), "只", "XIAONIAO"),
    Thing("bottle", "瓶子", (), "个", "PINGZI"),
    Thing("candle", "蜡烛", (), "支", "LAZHU"),
    Thing("clock", "时钟", ("闹钟",), "个", "SHIZHONG"),
    Thing("apple", "苹果", (), "个", "PINGGUO"),
    Thing("leaf", "树叶", (), "片", "SHUYE"),
    Thing("arrow", "箭头", (), "个", "JIANTOU"),
    Thing("ring", "圆环", ("圆圈",), "个", "YUANHUAN"),
    Thing("hat", "帽子", (), "顶", "MAOZI"),
    Thing("gem", "钻石", (), "颗", "ZUANSHI"),
    Thing("pencil", "铅笔", (), "支", "QIANBI"),
    Thing("flag", "旗子", ("旗帜",), "面", "QIZI"),
    Thing("tent", "帐篷", (), "顶", "ZHANGPENG"),
    Thing("bell", "铃铛", (), "个", "LINGDANG"),
)

COLOURS: tuple[Colour, ...] = (
    Colour("red", "红色", ("大红色", "鲜红色"), (214, 38, 40), "HONG"),
    Colour("orange", "橙色", ("橘黄色", "橘色"), (245, 138, 20), "CHENG"),
    Colour("yellow", "黄色", ("金黄色", "明黄色"), (250, 214, 30), "HUANG"),
    Colour("green", "绿色", ("深绿色", "翠绿色"), (40, 158, 58), "LV"),
    Colour("blue", "蓝色", ("深蓝色", "宝蓝色"), (36, 78, 212), "LAN"),
    Colour("purple", "紫色", ("深紫色",), (128, 48, 172), "ZI"),
    Colour("pink", "粉色", ("粉红色",), (246, 136, 182), "FEN"),
    Colour("white", "白色", ("纯白色", "雪白色"), (246, 246, 242), "BAI"),
    Colour("black", "黑色", ("纯黑色",), (24, 24, 28), "HEI"),
    Colour("brown", "棕色", ("咖啡色", "褐色"), (128, 76, 36), "ZONG"),
)

BACKGROUNDS: tuple[Background, ...] = (
    Background("sky", ("天空", "晴空"), ("天空中", "天空里", "晴空中"), ("晴朗的", "明亮的", "开阔的"),
               frozenset({"blue", "white"})),
    Background("grass", ("草地", "草坪"), ("草地上", "草坪上"), ("柔软的", "茂盛的", "平整的"),
               frozenset({"green"})),
    Background("sea", ("海面", "大海"), ("海面上", "大海上", "海上"), ("平静的", "辽阔的", "波光粼粼的"),
               frozenset({"blue"})),
    Background("room", ("房间", "室内"), ("房间里", "室内", "屋子里"), ("温馨的", "安静的", "整洁的"),
               frozenset({"brown"})),
    Background("night", ("夜空", "夜幕"), ("夜空中", "夜空下", "夜幕下"), ("宁静的", "深邃的", "安静的"),
               frozenset({"black", "blue", "purple"})),
    Background("desert", ("沙漠", "沙丘"), ("沙漠里", "沙漠中", "沙丘上"), ("炎热的", "广阔的", "干燥的"),
               frozenset({"yellow", "orange", "brown"})),
    Background("snow", ("雪地", "雪原"), ("雪地上", "雪地里", "雪原上"), ("寒冷的", "厚厚的", "安静的"),
               frozenset({"white"})),
    Background("table", ("桌面", "木桌"), ("桌面上", "木桌上"), ("干净的", "木质的", "光滑的"),
               frozenset({"brown", "orange"})),
)

POSITIONS: dict[str, tuple[str, ...]] = {
    "left": ("左边", "左侧", "左面"),
    "right": ("右边", "右侧", "右面"),
    "top": ("上方", "上面", "顶部"),
    "bottom": ("下方", "下面", "底部"),
    "center": ("中间", "中央", "正中间"),
}
# Positions two groups may take together (their regions do not overlap).
POSITION_PAIRS: tuple[tuple[str, str], ...] = (("left", "right"), ("top", "bottom"))

NUMERALS = {1: "一", 2: "两", 3: "三", 4: "四"}

THING_BY_KEY = {t.key: t for t in THINGS}
COLOUR_BY_KEY = {c.key: c for c in COLOURS}
BACKGROUND_BY_KEY = {b.key: b for b in BACKGROUNDS}

# Neutral words and phrases: never a thing, colour or background form (checked by `_check_vocabulary`).
THING_ADJECTIVES = ("可爱的", "漂亮的", "精致的", "简单的", "小巧的", "卡通风格的", "崭新的", "胖乎乎的", "亮晶晶的")
EXTRA_PHRASES = (
    "构图简洁", "线条清晰", "画面干净", "适合做壁纸", "风格可爱", "简笔画风格", "儿童插画风格", "细节清楚",
    "可免费下载", "原创作品", "扁平风格", "手绘风格", "高清大图", "画面很有童趣", "层次分明", "光线柔和",
)
POSTER_NOUNS = ("宣传海报", "海报", "宣传单", "文字图片", "说明书", "招贴画")
LATIN_TAGS = ("HD", "4K", "DIY", "PNG", "JPG", "Logo", "Vlog", "PPT", "Banner", "Icon")  # product / file-type tokens


def named_in(text: str) -> tuple[list[str], list[str], list[str]]:
    """Thing, colour and background keys named in `text` (Simplified), in order, by a longest-match scan."""
    things, colours, backgrounds = [], [], []
    i = 0
    while i < len(text):
        for n in range(_MAX_FORM, 0, -1):
            hit = _FORM_INDEX.get(text[i : i + n])
            if hit is not None:
                kind, key = hit
                (things if kind == "thing" else colours if kind == "colour" else backgrounds).append(key)
                i += n
                break
        else:
            i += 1
    return things, colours, backgrounds


def _build_form_index() -> dict[str, tuple[str, str]]:
    index: dict[str, tuple[str, str]] = {}
    for kind, items in (("thing", THINGS), ("colour", COLOURS)):
        for item in items:
            for form in item.forms:  # type: ignore[attr-defined]
                assert form not in index, form
                index[form] = (kind, item.key)  # type: ignore[attr-defined]
    for bg in BACKGROUNDS:
        for form in (*bg.nouns, *bg.locatives):  # locatives too: 海上 and 屋子里 contain no noun
            assert index.get(form, ("background", bg.key)) == ("background", bg.key), form
            index[form] = ("background", bg.key)
    return index


_FORM_INDEX = _build_form_index()
_MAX_FORM = max(map(len, _FORM_INDEX))


def _check_vocabulary() -> None:
    """Neutral words (adjectives, wrappers, positions) name nothing; a locative names its background only."""
    neutral = (*THING_ADJECTIVES, *EXTRA_PHRASES, *POSTER_NOUNS, *LATIN_TAGS,
               *(f for fs in POSITIONS.values() for f in fs), *(a for b in BACKGROUNDS for a in b.adjectives))
    for word in neutral:
        assert named_in(word) == ([], [], []), word
    for bg in BACKGROUNDS:
        for loc in bg.locatives:
            assert named_in(loc) == ([], [], [bg.key]), loc


_check_vocabulary()

# ---------------------------------------------------------------------------------------------------------------------
# Scenes.


@dataclass(frozen=True, order=True)
class Group:
    thing: str
    colour: str
    count: int
    position: str

    def __str__(self) -> str:
        return f"{self.count} {self.colour} {self.thing} {self.position}"


@dataclass(frozen=True)
class Scene:
    """A background and one or two groups of things (groups sorted: equal scenes compare and hash equal)."""

    background: str
    groups: tuple[Group, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(sorted(self.groups)))

    @property
    def things(self) -> list[str]:
        return [g.thing for g in self.groups]

    @property
    def colours(self) -> list[str]:
        return [g.colour for g in self.groups]

    def __str__(self) -> str:
        """Canonical text form, e.g. `grass;2 red ball left;1 yellow star right` (`Scene.parse` reads it back)."""
        return ";".join([self.background, *map(str, self.groups)])

    @classmethod
    def parse(cls, text: str) -> Scene:
        bg, *groups = text.split(";")
        out = []
        for g in groups:
            count, colour, thing, position = g.split(" ")
            out.append(Group(thing, colour, int(count), position))
        return cls(bg, tuple(out))


def sample_scene(rng: random.Random, *, groups: int | None = None, thing: str | None = None,
                 count: int | None = None) -> Scene:
    """A random scene: a background, then 1 (55 %) or 2 groups of distinct things in colours that show on it, at
    positions that do not overlap (left/right or top/bottom for two groups), 1-4 things each.

    groups / thing / count: fix the number of groups, the first group's thing, every group's count."""
    if groups not in (None, 1, 2):
        raise ValueError(f"a scene has 1 or 2 groups, not {groups}")
    bg = rng.choice(BACKGROUNDS)
    n = groups if groups is not None else (1 if rng.random() < 0.55 else 2)
    positions = [rng.choice(list(POSITIONS))] if n == 1 else list(rng.choice(POSITION_PAIRS))
    if thing is None:
        kinds = rng.sample([t.key for t in THINGS], n)
    else:
        kinds = [thing, *rng.sample([t.key for t in THINGS if t.key != thing], n - 1)]
    colours = [c.key for c in COLOURS if c.key not in bg.clashes]
    out = []
    for kind, pos in zip(kinds, positions):
        k = count if count is not None else rng.choices((1, 2, 3, 4), weights=(40, 30, 18, 12))[0]
        out.append(Group(kind, rng.choice(colours), k, pos))
    return Scene(bg.key, tuple(out))


# ---------------------------------------------------------------------------------------------------------------------
# Captions.


def _np(g: Group, r: random.Random) -> str:
    """A noun phrase for a group: 两个红色的圆球 / 一颗可爱的金黄色星星 / 红色圆球两个."""
    t, c = THING_BY_KEY[g.thing], COLOUR_BY_KEY[g.colour]
    thing = r.choice(t.forms) if r.random() < 0.45 else t.name
    colour = r.choice(c.forms) if r.random() < 0.35 else c.name
    num = f"{NUMERALS[g.count]}{t.measure}"
    a = r.choice(THING_ADJECTIVES) if r.random() < 0.3 else ""
    forms = [
        lambda: f"{num}{a}{colour}的{thing}",
        lambda: f"{num}{a}{colour}{thing}",
        lambda: f"{num}{colour}的{a}{thing}" if a else f"{num}{colour}的{thing}",
        lambda: f"{colour}的{thing}{num}" if g.count > 1 else f"{num}{colour}的{thing}",
    ]
    if g.count == 1 and r.random() < 0.25:
        forms.append(lambda: f"{a}{colour}的{thing}")
    return r.choice(forms)()


def _pos(g: Group, r: random.Random, *, bare: bool = False) -> str:
    p = r.choice(POSITIONS[g.position])
    return p if bare else r.choice([p, p, f"画面{p}", f"图片{p}", f"画面的{p}"])


def _group_clause(g: Group, bg: Background, r: random.Random, *, with_bg: bool) -> str:
    """One group in one clause, the background named or not."""
    np_, pos, bare = _np(g, r), _pos(g, r), _pos(g, r, bare=True)
    noun, loc = r.choice(bg.nouns), r.choice(bg.locatives)
    bga = r.choice(bg.adjectives) if r.random() < 0.3 else ""
    if with_bg:
        forms = [
            lambda: f"{loc}，{pos}有{np_}",
            lambda: f"{np_}在{bga}{noun}的{bare}",
            lambda: f"{bga}{noun}的{bare}是{np_}",
            lambda: f"{pos}，{np_}出现在{loc}",
            lambda: f"{np_}位于{noun}{bare}",
            lambda: f"在{bga}{noun}的{bare}画着{np_}",
            lambda: f"{loc}，{pos}放着{np_}",
            lambda: f"{bga}{noun}背景下，{pos}是{np_}",
            lambda: f"{loc}的{bare}有{np_}",
            lambda: f"在{loc}可以看到{np_}，位置在{pos}",
        ]
    else:
        forms = [
            lambda: f"{pos}有{np_}",
            lambda: f"{pos}是{np_}",
            lambda: f"{np_}在{pos}",
            lambda: f"{pos}画着{np_}",
            lambda: f"{np_}位于{pos}",
        ]
    return r.choice(forms)()


def _bg_clause(bg: Background, r: random.Random) -> str:
    noun = r.choice(bg.nouns)
    bga = r.choice(bg.adjectives) if r.random() < 0.5 else ""
    return r.choice([f"背景是{bga}{noun}", f"以{bga}{noun}为背景", f"场景是{bga}{noun}", f"{bga}{noun}作背景"])


def _summary(scene: Scene, r: random.Random) -> str:
    """A short tag naming the things and colours (for wrappers): 红色圆球和黄色星星."""
    parts = []
    for g in scene.groups:
        t, c = THING_BY_KEY[g.thing], COLOUR_BY_KEY[g.colour]
        parts.append(f"{c.name}{r.choice(t.forms)}")
    return r.choice(["和", "与", "、"]).join(parts)


def caption_parts(scene: Scene, r: random.Random) -> list[str]:
    """The clauses of a caption describing `scene` (`caption_for` joins them; the crawl decorates them)."""
    bg = BACKGROUND_BY_KEY[scene.background]
    groups = list(scene.groups)
    r.shuffle(groups)
    body: list[str] = []
    if len(groups) == 1:
        if r.random() < 0.7:
            body.append(_group_clause(groups[0], bg, r, with_bg=True))
        else:
            body += [_group_clause(groups[0], bg, r, with_bg=False), _bg_clause(bg, r)]
    else:
        first_bg = r.random() < 0.6
        a = _group_clause(groups[0], bg, r, with_bg=first_bg)
        b = _group_clause(groups[1], bg, r, with_bg=False)
        link = r.choice(["", "", "另一边", "旁边", "同时"]) if not b.startswith(("画面", "图片")) else ""
        if link == "旁边":
            b = f"旁边{_np(groups[1], r)}在{_pos(groups[1], r)}"
        elif link:
            b = f"{link}{b}"
        body += [a, b]
        if not first_bg:
            body.insert(r.choice([0, 2]), _bg_clause(bg, r))
    style = r.choices(["plain", "product", "news", "blog", "stock"], weights=[40, 15, 15, 15, 15])[0]
    tag = _summary(scene, r)
    if style == "product":
        body.insert(0, r.choice([f"【{tag}】", f"{tag}图案", f"{tag}主题装饰画", f"{tag}摆件实拍图"]))
        if r.random() < 0.5:
            body.append(r.choice(["包邮", "现货速发", "高清实拍", "支持定制", "多款可选"]))
    elif style == "news":
        body[0] = r.choice(["现场图：", "记者拍摄：", "资料图：", "新闻配图："]) + body[0]
        if r.random() < 0.5:
            body.append(r.choice(["（图片来自网络）", "（记者摄）", "（资料图）"]))
    elif style == "blog":
        body.insert(0, r.choice(["今天画了一张画", "分享一张新作品", "随手画的小画", "给孩子画的简笔画", "周末的练习作品"]))
        if r.random() < 0.5:
            body.append(r.choice(["大家觉得怎么样", "希望你们喜欢", "记录一下", "第一次尝试这种风格"]))
    elif style == "stock":
        body.append(r.choice([f"{tag}矢量插画", f"{tag}卡通素材", f"{tag}高清图片", f"{tag}儿童画素材"]))
    if r.random() < 0.35:
        body.append(r.choice(EXTRA_PHRASES))
    return [p for p in body if p]


def caption_for(scene: Scene, rng: random.Random, *, sep: str | None = None) -> str:
    """A natural Chinese caption naming the scene's things, colours, counts, positions and background."""
    parts = caption_parts(scene, rng)
    if sep is None:
        sep = rng.choices(["，", " ", "；"], weights=[82, 12, 6])[0]
    return sep.join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# Drawing helpers.


def _shade(c: RGB, f: float) -> RGB:
    """Darker (f < 1) or lighter (f > 1, towards white) version of a colour."""
    if f <= 1:
        return tuple(int(v * f) for v in c)  # type: ignore[return-value]
    t = min(1.0, f - 1)
    return tuple(int(v + (255 - v) * t) for v in c)  # type: ignore[return-value]


def _outline(c: RGB) -> RGB:
    return (110, 110, 110) if sum(c) < 120 else _shade(c, 0.42)


def _jitter(rng: np.random.Generator, c: RGB, amount: int = 14) -> RGB:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in c)  # type: ignore[return-value]


def _box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    """The bounding box of radii rx, ry around (cx, cy); a radius that an outline width made negative (a thing a few
    pixels tall) is 0, since Pillow refuses an inverted box."""
    rx, ry = max(rx, 0.0), max(ry, 0.0)
    return [cx - rx, cy - ry, cx + rx, cy + ry]


def _rot(points: list[tuple[float, float]], cx: float, cy: float, angle: float) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * ca - (y - cy) * sa, cy + (x - cx) * sa + (y - cy) * ca) for x, y in points]


# Each drawer: (draw, cx, cy, s, colour, rng) with s the side of the square the thing fills.
Drawer = Callable[[Any, float, float, float, RGB, np.random.Generator], None]


def _lw(s: float) -> int:
    return max(2, int(s / 26))


def _draw_ball(d, cx, cy, s, c, rng):
    r = s * 0.46
    d.ellipse(_box(cx, cy, r, r), fill=c, outline=_outline(c), width=_lw(s))
    d.arc(_box(cx, cy, r * 0.95, r * 0.45), 10, 170, fill=_shade(c, 0.7), width=_lw(s))
    d.ellipse(_box(cx - r * 0.38, cy - r * 0.4, r * 0.2, r * 0.14), fill=_shade(c, 1.6))


def _draw_box(d, cx, cy, s, c, rng):
    a, o = s * 0.62, s * 0.22
    x0, y0 = cx - (a + o) / 2, cy - (a - o) / 2
    front = [x0, y0, x0 + a, y0 + a]
    top = [(x0, y0), (x0 + o, y0 - o), (x0 + a + o, y0 - o), (x0 + a, y0)]
    side = [(x0 + a, y0), (x0 + a + o, y0 - o), (x0 + a + o, y0 + a - o), (x0 + a, y0 + a)]
    ol, w = _outline(c), _lw(s)
    d.polygon(top, fill=_shade(c, 1.3), outline=ol, width=w)
    d.polygon(side, fill=_shade(c, 0.72), outline=ol, width=w)
    d.rectangle(front, fill=c, outline=ol, width=w)
    d.line([(x0 + a / 2, y0), (x0 + a / 2, y0 + a)], fill=_shade(c, 0.6), width=w)


def _draw_triangle(d, cx, cy, s, c, rng):
    h = s * 0.86
    pts = [(cx, cy - h / 2), (cx + s / 2, cy + h / 2), (cx - s / 2, cy + h / 2)]
    d.polygon(pts, fill=c, outline=_outline(c), width=_lw(s))
    d.line([(cx - s * 0.06, cy - h * 0.3), (cx - s * 0.3, cy + h * 0.36)], fill=_shade(c, 1.45), width=_lw(s))


def _star_points(cx, cy, r_out, r_in, n=5, phase=-math.pi / 2):
    pts = []
    for k in range(2 * n):
        r = r_out if k % 2 == 0 else r_in
        a = phase + k * math.pi / n
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def _draw_star(d, cx, cy, s, c, rng):
    d.polygon(_star_points(cx, cy, s * 0.5, s * 0.21), fill=c, outline=_outline(c), width=_lw(s))
    d.polygon(_star_points(cx, cy, s * 0.2, s * 0.09), fill=_shade(c, 1.35))


def _draw_heart(d, cx, cy, s, c, rng):
    pts = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((cx + x * s / 34, cy - y * s / 34 - s * 0.03))
    d.polygon(pts, fill=c, outline=_outline(c), width=_lw(s))
    d.ellipse(_box(cx - s * 0.2, cy - s * 0.2, s * 0.08, s * 0.06), fill=_shade(c, 1.6))


def _draw_house(d, cx, cy, s, c, rng):
    w, h = s * 0.78, s * 0.5
    x0, y0 = cx - w / 2, cy - s * 0.05
    ol, lw = _outline(c), _lw(s)
    d.rectangle([x0, y0, x0 + w, y0 + h], fill=c, outline=ol, width=lw)
    d.polygon([(x0 - s * 0.08, y0), (cx, cy - s * 0.5), (x0 + w + s * 0.08, y0)], fill=_shade(c, 0.62), outline=ol,
              width=lw)
    d.rectangle([cx - s * 0.08, y0 + h * 0.38, cx + s * 0.08, y0 + h], fill=(92, 58, 30), outline=ol, width=lw)
    for wx in (x0 + w * 0.12, x0 + w * 0.7):
        d.rectangle([wx, y0 + h * 0.2, wx + w * 0.18, y0 + h * 0.5], fill=(190, 225, 245), outline=ol, width=lw)
        d.line([(wx + w * 0.09, y0 + h * 0.2), (wx + w * 0.09, y0 + h * 0.5)], fill=ol, width=max(1, lw // 2))


def _draw_tree(d, cx, cy, s, c, rng):
    trunk = (96, 60, 30) if c != COLOUR_BY_KEY["brown"].rgb else (60, 36, 16)
    d.rectangle([cx - s * 0.07, cy, cx + s * 0.07, cy + s * 0.5], fill=trunk, outline=_outline(trunk), width=_lw(s))
    ol = _outline(c)
    for dx, dy, r in ((-0.18, -0.02, 0.2), (0.18, -0.02, 0.2), (0, -0.22, 0.24), (0, 0.02, 0.2)):
        d.ellipse(_box(cx + dx * s, cy + dy * s, r * s, r * s), fill=c, outline=ol, width=_lw(s))
    d.ellipse(_box(cx - s * 0.08, cy - s * 0.28, s * 0.07, s * 0.05), fill=_shade(c, 1.4))


def _draw_car(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    w, h = s * 0.96, s * 0.26
    y0 = cy - h * 0.3
    d.polygon([(cx - w * 0.28, y0), (cx - w * 0.16, y0 - h * 0.95), (cx + w * 0.2, y0 - h * 0.95), (cx + w * 0.32, y0)],
              fill=c, outline=ol, width=lw)
    d.rounded_rectangle([cx - w / 2, y0, cx + w / 2, y0 + h], radius=h * 0.3, fill=c, outline=ol, width=lw)
    d.polygon([(cx - w * 0.22, y0 - 1), (cx - w * 0.13, y0 - h * 0.78), (cx - w * 0.01, y0 - h * 0.78),
               (cx - w * 0.01, y0 - 1)], fill=(185, 220, 240))
    d.polygon([(cx + w * 0.03, y0 - 1), (cx + w * 0.03, y0 - h * 0.78), (cx + w * 0.17, y0 - h * 0.78),
               (cx + w * 0.26, y0 - 1)], fill=(185, 220, 240))
    for wx in (cx - w * 0.28, cx + w * 0.28):
        d.ellipse(_box(wx, y0 + h, h * 0.55, h * 0.55), fill=(30, 30, 32), outline=(90, 90, 90), width=lw)
        d.ellipse(_box(wx, y0 + h, h * 0.22, h * 0.22), fill=(170, 170, 175))
    d.rectangle([cx + w * 0.42, y0 + h * 0.2, cx + w * 0.5, y0 + h * 0.45], fill=(250, 235, 140))


def _draw_flower(d, cx, cy, s, c, rng):
    d.line([(cx, cy), (cx + s * 0.04, cy + s * 0.5)], fill=(46, 120, 40), width=max(2, int(s / 14)))
    d.ellipse(_box(cx + s * 0.14, cy + s * 0.3, s * 0.11, s * 0.05), fill=(60, 150, 50))
    ol = _outline(c)
    n = 6
    for k in range(n):
        a = 2 * math.pi * k / n
        d.ellipse(_box(cx + math.cos(a) * s * 0.2, cy - s * 0.12 + math.sin(a) * s * 0.2, s * 0.14, s * 0.14),
                  fill=c, outline=ol, width=_lw(s))
    centre = (250, 210, 40) if c != COLOUR_BY_KEY["yellow"].rgb else (170, 90, 20)
    d.ellipse(_box(cx, cy - s * 0.12, s * 0.1, s * 0.1), fill=centre, outline=_outline(centre), width=_lw(s))


def _draw_fish(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    d.polygon([(cx + s * 0.22, cy), (cx + s * 0.5, cy - s * 0.2), (cx + s * 0.5, cy + s * 0.2)], fill=_shade(c, 0.75),
              outline=ol, width=lw)
    d.ellipse(_box(cx - s * 0.06, cy, s * 0.34, s * 0.2), fill=c, outline=ol, width=lw)
    d.polygon([(cx - s * 0.08, cy - s * 0.18), (cx + s * 0.1, cy - s * 0.3), (cx + s * 0.12, cy - s * 0.14)],
              fill=_shade(c, 0.75), outline=ol, width=lw)
    d.ellipse(_box(cx - s * 0.24, cy - s * 0.04, s * 0.05, s * 0.05), fill=(255, 255, 255), outline=(20, 20, 20))
    d.ellipse(_box(cx - s * 0.25, cy - s * 0.04, s * 0.022, s * 0.022), fill=(10, 10, 10))
    for k in range(3):
        d.arc(_box(cx + s * (0.0 + 0.08 * k), cy, s * 0.08, s * 0.12), 300, 60, fill=_shade(c, 0.6), width=lw)


def _draw_cup(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    d.ellipse(_box(cx + s * 0.3, cy, s * 0.16, s * 0.16), outline=c, width=max(3, int(s / 12)))
    d.polygon([(cx - s * 0.3, cy - s * 0.34), (cx + s * 0.3, cy - s * 0.34), (cx + s * 0.22, cy + s * 0.38),
               (cx - s * 0.22, cy + s * 0.38)], fill=c, outline=ol, width=lw)
    d.ellipse(_box(cx, cy - s * 0.34, s * 0.3, s * 0.07), fill=_shade(c, 0.55), outline=ol, width=lw)
    d.line([(cx - s * 0.18, cy - s * 0.2), (cx - s * 0.14, cy + s * 0.25)], fill=_shade(c, 1.45), width=lw)


def _draw_umbrella(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    grey = (70, 70, 74)
    d.line([(cx, cy - s * 0.05), (cx, cy + s * 0.4)], fill=grey, width=max(2, int(s / 18)))
    d.arc(_box(cx - s * 0.07, cy + s * 0.4, s * 0.07, s * 0.07), 0, 180, fill=grey, width=max(2, int(s / 18)))
    d.pieslice(_box(cx, cy, s * 0.5, s * 0.42), 180, 360, fill=c, outline=ol, width=lw)
    for k in range(1, 4):
        x = cx - s * 0.5 + k * s * 0.25
        d.line([(cx, cy - s * 0.42), (x, cy)], fill=_shade(c, 0.65), width=lw)


def _draw_moon(d, cx, cy, s, c, rng):
    r, rho, dd = s * 0.46, s * 0.4, s * 0.26
    x = (r * r - rho * rho + dd * dd) / (2 * dd)
    y = math.sqrt(max(r * r - x * x, 1.0))
    a0 = math.atan2(y, x)
    b0 = math.atan2(y, x - dd)
    pts = [(cx + r * math.cos(t), cy + r * math.sin(t)) for t in np.linspace(a0, 2 * math.pi - a0, 40)]
    pts += [(cx + dd + rho * math.cos(t), cy + rho * math.sin(t)) for t in np.linspace(2 * math.pi - b0, b0, 40)]
    d.polygon(pts, fill=c, outline=_outline(c), width=_lw(s))
    d.ellipse(_box(cx - r * 0.62, cy - r * 0.1, r * 0.08, r * 0.08), fill=_shade(c, 0.75))


def _draw_kite(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    pts = [(cx, cy - s * 0.48), (cx + s * 0.3, cy - s * 0.1), (cx, cy + s * 0.25), (cx - s * 0.3, cy - s * 0.1)]
    tail = [(cx + s * 0.06 * math.sin(k * 1.6), cy + s * 0.25 + k * s * 0.06) for k in range(5)]
    d.line(tail, fill=(60, 60, 60), width=max(1, lw // 2 + 1))
    for x, y in tail[1::2]:
        d.polygon([(x - s * 0.05, y - s * 0.03), (x + s * 0.05, y + s * 0.03), (x + s * 0.05, y - s * 0.03),
                   (x - s * 0.05, y + s * 0.03)], fill=_shade(c, 0.6))
    d.polygon(pts, fill=c, outline=ol, width=lw)
    d.line([pts[0], pts[2]], fill=ol, width=lw)
    d.line([pts[1], pts[3]], fill=ol, width=lw)


def _draw_sailboat(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    d.line([(cx, cy - s * 0.48), (cx, cy + s * 0.2)], fill=(70, 50, 30), width=max(2, int(s / 24)))
    d.polygon([(cx + s * 0.03, cy - s * 0.45), (cx + s * 0.36, cy + s * 0.14), (cx + s * 0.03, cy + s * 0.14)],
              fill=c, outline=ol, width=lw)
    d.polygon([(cx - s * 0.03, cy - s * 0.3), (cx - s * 0.03, cy + s * 0.14), (cx - s * 0.26, cy + s * 0.14)],
              fill=_shade(c, 1.3), outline=ol, width=lw)
    d.polygon([(cx - s * 0.46, cy + s * 0.2), (cx + s * 0.46, cy + s * 0.2), (cx + s * 0.32, cy + s * 0.38),
               (cx - s * 0.32, cy + s * 0.38)], fill=_shade(c, 0.6), outline=ol, width=lw)


def _draw_mushroom(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    stem = (238, 226, 200)
    d.rounded_rectangle([cx - s * 0.12, cy - s * 0.05, cx + s * 0.12, cy + s * 0.45], radius=s * 0.05, fill=stem,
                        outline=_outline(stem), width=lw)
    d.chord(_box(cx, cy, s * 0.46, s * 0.42), 180, 360, fill=c, outline=ol, width=lw)
    spot = (250, 250, 250) if c != COLOUR_BY_KEY["white"].rgb else (150, 150, 150)
    for dx, dy, r in ((-0.22, -0.12, 0.07), (0.05, -0.28, 0.08), (0.24, -0.1, 0.06)):
        d.ellipse(_box(cx + dx * s, cy + dy * s, r * s, r * s), fill=spot)


def _draw_balloon(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    pts = [(cx + s * 0.04 * math.sin(k * 1.3), cy + s * 0.2 + k * s * 0.06) for k in range(6)]
    d.line(pts, fill=(90, 90, 90), width=max(1, lw // 2))
    d.polygon([(cx, cy + s * 0.14), (cx - s * 0.05, cy + s * 0.22), (cx + s * 0.05, cy + s * 0.22)],
              fill=_shade(c, 0.7))
    d.ellipse(_box(cx, cy - s * 0.14, s * 0.3, s * 0.36), fill=c, outline=ol, width=lw)
    d.ellipse(_box(cx - s * 0.12, cy - s * 0.28, s * 0.06, s * 0.1), fill=_shade(c, 1.6))


def _draw_bird(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    beak = (250, 170, 30) if c != COLOUR_BY_KEY["orange"].rgb else (250, 230, 60)
    d.polygon([(cx + s * 0.25, cy), (cx + s * 0.48, cy - s * 0.12), (cx + s * 0.46, cy + s * 0.1)], fill=_shade(c, 0.7),
              outline=ol, width=lw)
    d.ellipse(_box(cx, cy + s * 0.02, s * 0.3, s * 0.2), fill=c, outline=ol, width=lw)
    d.ellipse(_box(cx - s * 0.26, cy - s * 0.16, s * 0.15, s * 0.15), fill=c, outline=ol, width=lw)
    d.polygon([(cx - s * 0.4, cy - s * 0.2), (cx - s * 0.52, cy - s * 0.14), (cx - s * 0.4, cy - s * 0.1)], fill=beak)
    d.ellipse(_box(cx - s * 0.3, cy - s * 0.19, s * 0.03, s * 0.03), fill=(10, 10, 10))
    d.chord(_box(cx + s * 0.04, cy, s * 0.18, s * 0.12), 0, 180, fill=_shade(c, 0.7), outline=ol, width=lw)


def _draw_bottle(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    d.rectangle([cx - s * 0.07, cy - s * 0.48, cx + s * 0.07, cy - s * 0.38], fill=(60, 60, 64))
    d.rectangle([cx - s * 0.08, cy - s * 0.38, cx + s * 0.08, cy - s * 0.18], fill=c, outline=ol, width=lw)
    d.rounded_rectangle([cx - s * 0.2, cy - s * 0.2, cx + s * 0.2, cy + s * 0.48], radius=s * 0.07, fill=c, outline=ol,
                        width=lw)
    d.rectangle([cx - s * 0.2, cy + s * 0.02, cx + s * 0.2, cy + s * 0.22], fill=(245, 240, 225), outline=ol, width=lw)
    d.line([(cx - s * 0.12, cy - s * 0.12), (cx - s * 0.12, cy - s * 0.02)], fill=_shade(c, 1.5), width=lw)


def _draw_candle(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    d.rectangle([cx - s * 0.13, cy - s * 0.15, cx + s * 0.13, cy + s * 0.48], fill=c, outline=ol, width=lw)
    d.ellipse(_box(cx, cy - s * 0.15, s * 0.13, s * 0.04), fill=_shade(c, 1.3), outline=ol, width=max(1, lw // 2))
    d.line([(cx, cy - s * 0.15), (cx, cy - s * 0.22)], fill=(20, 20, 20), width=max(1, lw // 2))
    flame = [(cx, cy - s * 0.5), (cx + s * 0.08, cy - s * 0.3), (cx, cy - s * 0.21), (cx - s * 0.08, cy - s * 0.3)]
    d.polygon(flame, fill=(255, 200, 40), outline=(230, 110, 20), width=lw)


def _draw_clock(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    d.ellipse(_box(cx, cy, s * 0.47, s * 0.47), fill=c, outline=ol, width=lw)
    face = (250, 250, 245) if c != COLOUR_BY_KEY["white"].rgb else (235, 230, 200)
    d.ellipse(_box(cx, cy, s * 0.37, s * 0.37), fill=face, outline=ol, width=max(1, lw // 2))
    for k in range(12):
        a = 2 * math.pi * k / 12
        d.line([(cx + math.cos(a) * s * 0.3, cy + math.sin(a) * s * 0.3),
                (cx + math.cos(a) * s * 0.35, cy + math.sin(a) * s * 0.35)], fill=(30, 30, 30), width=max(1, lw // 2))
    h, m = rng.uniform(0, 2 * math.pi, 2)
    d.line([(cx, cy), (cx + math.cos(h) * s * 0.18, cy + math.sin(h) * s * 0.18)], fill=(20, 20, 20), width=lw + 1)
    d.line([(cx, cy), (cx + math.cos(m) * s * 0.28, cy + math.sin(m) * s * 0.28)], fill=(20, 20, 20), width=lw)


def _draw_apple(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    d.line([(cx, cy - s * 0.26), (cx + s * 0.04, cy - s * 0.44)], fill=(90, 56, 26), width=max(2, int(s / 20)))
    leaf = (56, 150, 48) if c != COLOUR_BY_KEY["green"].rgb else (24, 90, 30)
    d.polygon([(cx + s * 0.04, cy - s * 0.38), (cx + s * 0.2, cy - s * 0.48), (cx + s * 0.26, cy - s * 0.36),
               (cx + s * 0.1, cy - s * 0.32)], fill=leaf)
    d.ellipse(_box(cx - s * 0.14, cy + s * 0.04, s * 0.27, s * 0.32), fill=c, outline=ol, width=lw)
    d.ellipse(_box(cx + s * 0.14, cy + s * 0.04, s * 0.27, s * 0.32), fill=c, outline=ol, width=lw)
    d.ellipse(_box(cx - s * 0.12, cy + s * 0.04, s * 0.2, s * 0.28), fill=c)
    d.ellipse(_box(cx - s * 0.2, cy - s * 0.08, s * 0.06, s * 0.08), fill=_shade(c, 1.55))


def _draw_leaf(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    ang = rng.uniform(-0.6, 0.6)
    pts = [(cx + s * 0.48 * math.cos(t), cy + s * 0.22 * math.sin(t) * abs(math.sin(t)) ** 0.3)
           for t in np.linspace(0, 2 * math.pi, 36, endpoint=False)]
    d.polygon(_rot(pts, cx, cy, ang), fill=c, outline=ol, width=lw)
    d.line(_rot([(cx - s * 0.5, cy), (cx + s * 0.46, cy)], cx, cy, ang), fill=ol, width=lw)
    for k in (-0.25, 0.0, 0.25):
        for sgn in (-1, 1):
            d.line(_rot([(cx + k * s, cy), (cx + (k + 0.12) * s, cy + sgn * s * 0.13)], cx, cy, ang), fill=ol,
                   width=max(1, lw // 2))


def _draw_arrow(d, cx, cy, s, c, rng):
    pts = [(cx - s * 0.48, cy - s * 0.12), (cx + s * 0.05, cy - s * 0.12), (cx + s * 0.05, cy - s * 0.3),
           (cx + s * 0.48, cy), (cx + s * 0.05, cy + s * 0.3), (cx + s * 0.05, cy + s * 0.12),
           (cx - s * 0.48, cy + s * 0.12)]
    ang = float(rng.choice([0.0, math.pi, math.pi / 2, -math.pi / 2])) + rng.uniform(-0.2, 0.2)
    d.polygon(_rot(pts, cx, cy, ang), fill=c, outline=_outline(c), width=_lw(s))


def _draw_ring(d, cx, cy, s, c, rng):
    w = max(4, int(s * 0.16))
    d.ellipse(_box(cx, cy, s * 0.46, s * 0.46), outline=_outline(c), width=w + 2 * _lw(s))
    d.ellipse(_box(cx, cy, s * 0.46 - _lw(s), s * 0.46 - _lw(s)), outline=c, width=w)
    d.arc(_box(cx, cy, s * 0.4, s * 0.4), 200, 250, fill=_shade(c, 1.5), width=max(2, w // 3))


def _draw_hat(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    d.ellipse(_box(cx, cy + s * 0.22, s * 0.48, s * 0.12), fill=_shade(c, 0.8), outline=ol, width=lw)
    d.rounded_rectangle([cx - s * 0.26, cy - s * 0.36, cx + s * 0.26, cy + s * 0.24], radius=s * 0.08, fill=c,
                        outline=ol, width=lw)
    band = (30, 30, 30) if sum(c) > 200 else (220, 220, 220)
    d.rectangle([cx - s * 0.26, cy + s * 0.06, cx + s * 0.26, cy + s * 0.16], fill=band)


def _draw_gem(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    top = cy - s * 0.22
    pts = [(cx - s * 0.28, cy - s * 0.42), (cx + s * 0.28, cy - s * 0.42), (cx + s * 0.48, top), (cx, cy + s * 0.46),
           (cx - s * 0.48, top)]
    d.polygon(pts, fill=c, outline=ol, width=lw)
    d.polygon([(cx - s * 0.28, cy - s * 0.42), (cx, top), (cx + s * 0.28, cy - s * 0.42)], fill=_shade(c, 1.4))
    for x in (-0.48, -0.16, 0.16, 0.48):
        d.line([(cx + x * s, top), (cx, cy + s * 0.46)], fill=ol, width=max(1, lw // 2))
    d.line([(cx - s * 0.48, top), (cx + s * 0.48, top)], fill=ol, width=lw)


def _draw_pencil(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    ang = rng.uniform(-0.8, 0.8)
    body = [(cx - s * 0.34, cy - s * 0.08), (cx + s * 0.28, cy - s * 0.08), (cx + s * 0.28, cy + s * 0.08),
            (cx - s * 0.34, cy + s * 0.08)]
    wood = [(cx + s * 0.28, cy - s * 0.08), (cx + s * 0.48, cy), (cx + s * 0.28, cy + s * 0.08)]
    lead = [(cx + s * 0.41, cy - s * 0.025), (cx + s * 0.48, cy), (cx + s * 0.41, cy + s * 0.025)]
    eraser = [(cx - s * 0.48, cy - s * 0.08), (cx - s * 0.4, cy - s * 0.08), (cx - s * 0.4, cy + s * 0.08),
              (cx - s * 0.48, cy + s * 0.08)]
    band = [(cx - s * 0.4, cy - s * 0.08), (cx - s * 0.34, cy - s * 0.08), (cx - s * 0.34, cy + s * 0.08),
            (cx - s * 0.4, cy + s * 0.08)]
    d.polygon(_rot(body, cx, cy, ang), fill=c, outline=ol, width=lw)
    d.polygon(_rot(wood, cx, cy, ang), fill=(232, 196, 140), outline=(120, 90, 50), width=lw)
    d.polygon(_rot(lead, cx, cy, ang), fill=(40, 40, 40))
    d.polygon(_rot(eraser, cx, cy, ang), fill=(240, 150, 160), outline=(120, 70, 80), width=lw)
    d.polygon(_rot(band, cx, cy, ang), fill=(180, 180, 186))


def _draw_flag(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    px = cx - s * 0.36
    d.line([(px, cy - s * 0.48), (px, cy + s * 0.48)], fill=(90, 90, 96), width=max(2, int(s / 22)))
    d.ellipse(_box(px, cy - s * 0.48, s * 0.035, s * 0.035), fill=(200, 170, 60))
    top = [(px + k * s * 0.07, cy - s * 0.42 + math.sin(k * 0.9) * s * 0.04) for k in range(12)]
    bot = [(x, y + s * 0.42) for x, y in reversed(top)]
    d.polygon(top + bot, fill=c, outline=ol, width=lw)


def _draw_tent(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    d.polygon([(cx, cy - s * 0.42), (cx + s * 0.5, cy + s * 0.36), (cx - s * 0.5, cy + s * 0.36)], fill=c, outline=ol,
              width=lw)
    d.polygon([(cx, cy - s * 0.1), (cx + s * 0.14, cy + s * 0.36), (cx - s * 0.14, cy + s * 0.36)], fill=_shade(c, 0.5))
    d.line([(cx, cy - s * 0.42), (cx, cy - s * 0.5)], fill=(70, 60, 50), width=lw)


def _draw_bell(d, cx, cy, s, c, rng):
    ol, lw = _outline(c), _lw(s)
    d.ellipse(_box(cx, cy - s * 0.4, s * 0.07, s * 0.07), outline=ol, width=lw)
    pts = [(cx - s * 0.16, cy - s * 0.3), (cx + s * 0.16, cy - s * 0.3), (cx + s * 0.26, cy),
           (cx + s * 0.3, cy + s * 0.22), (cx + s * 0.42, cy + s * 0.3), (cx - s * 0.42, cy + s * 0.3),
           (cx - s * 0.3, cy + s * 0.22), (cx - s * 0.26, cy)]
    d.polygon(pts, fill=c, outline=ol, width=lw)
    d.ellipse(_box(cx, cy + s * 0.36, s * 0.08, s * 0.08), fill=_shade(c, 0.5), outline=ol, width=lw)
    d.line([(cx - s * 0.12, cy - s * 0.22), (cx - s * 0.18, cy + s * 0.15)], fill=_shade(c, 1.5), width=lw)


DRAWERS: dict[str, Drawer] = {
    "ball": _draw_ball, "box": _draw_box, "triangle": _draw_triangle, "star": _draw_star, "heart": _draw_heart,
    "house": _draw_house, "tree": _draw_tree, "car": _draw_car, "flower": _draw_flower, "fish": _draw_fish,
    "cup": _draw_cup, "umbrella": _draw_umbrella, "moon": _draw_moon, "kite": _draw_kite, "sailboat": _draw_sailboat,
    "mushroom": _draw_mushroom, "balloon": _draw_balloon, "bird": _draw_bird, "bottle": _draw_bottle,
    "candle": _draw_candle, "clock": _draw_clock, "apple": _draw_apple, "leaf": _draw_leaf, "arrow": _draw_arrow,
    "ring": _draw_ring, "hat": _draw_hat, "gem": _draw_gem, "pencil": _draw_pencil, "flag": _draw_flag,
    "tent": _draw_tent, "bell": _draw_bell,
}
assert set(DRAWERS) == set(THING_BY_KEY)

# ---------------------------------------------------------------------------------------------------------------------
# Backgrounds: a smooth two-colour gradient at a random angle, a light spot, structure, dense texture.

# (base colour A, base colour B, texture colours) per background.
_PALETTES: dict[str, tuple[RGB, RGB, tuple[RGB, ...]]] = {
    "sky": ((70, 140, 225), (190, 220, 250), ((255, 255, 255), (225, 235, 250), (150, 190, 235), (110, 160, 220))),
    "grass": ((40, 120, 35), (130, 190, 70), ((15, 65, 15), (90, 170, 50), (170, 220, 100), (60, 140, 40))),
    "sea": ((20, 70, 140), (60, 150, 190), ((230, 245, 255), (20, 50, 110), (90, 170, 210), (40, 110, 170))),
    "room": ((225, 205, 170), (245, 235, 215), ((190, 160, 120), (250, 245, 235), (170, 130, 90), (210, 190, 160))),
    "night": ((8, 12, 40), (40, 50, 100), ((255, 255, 230), (180, 190, 255), (70, 80, 140), (20, 25, 60))),
    "desert": ((215, 170, 100), (245, 215, 150), ((180, 130, 70), (250, 230, 180), (200, 150, 80), (160, 110, 60))),
    "snow": ((205, 215, 230), (245, 248, 252), ((255, 255, 255), (160, 178, 205), (215, 225, 240), (120, 140, 175))),
    "table": ((150, 100, 55), (200, 150, 95), ((110, 70, 35), (215, 170, 110), (170, 115, 65), (90, 55, 25))),
}


def _backdrop(Image: Any, rng: np.random.Generator, w: int, h: int, a: RGB, b: RGB) -> Any:
    s = 48
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    ang = rng.uniform(0, 2 * np.pi)
    t = np.cos(ang) * xx + np.sin(ang) * yy
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    ca, cb = np.array(a, np.float32), np.array(b, np.float32)
    ca, cb = ca * rng.uniform(0.8, 1.15), cb * rng.uniform(0.8, 1.15)
    base = ca * (1 - t[..., None]) + cb * t[..., None]
    # a light (or shadow) spot and a second, weaker one
    for strength in (rng.uniform(-0.35, 0.45), rng.uniform(-0.25, 0.3)):
        cx, cy = rng.uniform(-0.1, 1.1, 2)
        dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.25, 0.6)
        spot = np.clip(1 - dist, 0, 1)[..., None] ** 1.5
        base = base * (1 + strength * spot)
    return Image.fromarray(base.clip(0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)


def _texture(d: Any, rng: np.random.Generator, w: int, h: int, bg: str, cols: tuple[RGB, ...],
             y_lo: float = 0.0, y_hi: float = 1.0) -> None:
    """Dense small marks in the background's colours: what makes the images sharp and high-entropy.

    Marks of one size and direction in rows on a flat ground read as lines of text to a text detector
    (`danqing_assets.lib.textness`), as a photo's ground does not: so ripples take many tilts, puffs many shapes, and
    the night sky is mottled under its stars.

    About a thousand marks per image, so they are drawn through the ImageDraw core (`d.draw`, the calls ImageDraw
    itself makes) with inks converted once per colour, which is several times faster than the public methods."""
    scale = max(w, h) / 256
    n = int(rng.integers(1100, 1500) * max(0.2, w * h / 250_000) ** 0.5)
    xs = rng.uniform(0, w, n)
    ys = rng.uniform(y_lo * h, y_hi * h, n)
    sizes = rng.uniform(1.5, 5.5, n) * scale
    palette = np.array(cols, dtype=np.int16)
    rgb = np.clip(palette[rng.integers(0, len(cols), n)] + rng.integers(-18, 19, (n, 3)), 0, 255)
    core = d.draw
    inks = [core.draw_ink(c) for c in map(tuple, rgb.tolist())]
    widths = np.maximum(1, (sizes / 2.5).astype(int)).tolist()
    if bg == "grass":  # blades
        tips = np.stack([xs + rng.uniform(-0.5, 0.5, n) * sizes, ys - 2.2 * sizes], 1).tolist()
        for p0, p1, ink, wd in zip(np.stack([xs, ys], 1).tolist(), tips, inks, widths):
            core.draw_lines((tuple(p0), tuple(p1)), ink, wd)
    elif bg in ("sea", "desert"):  # wave crests / ripples of many tilts and lengths
        a0 = rng.uniform(150, 250, n) if bg == "sea" else rng.uniform(0, 360, n)
        a1 = a0 + rng.uniform(60, 200, n)
        boxes = np.stack([xs - 2 * sizes, ys - sizes, xs + 2 * sizes, ys + sizes], 1).tolist()
        for box, ink, wd, s0, s1 in zip(boxes, inks, widths, a0.tolist(), a1.tolist()):
            core.draw_arc(box, s0, s1, ink, wd)
    elif bg == "table":  # grain
        ends = np.stack([xs + 4 * sizes, ys + rng.uniform(-0.3, 0.3, n) * sizes], 1).tolist()
        for p0, p1, ink, wd in zip(np.stack([xs, ys], 1).tolist(), ends, inks, widths):
            core.draw_lines((tuple(p0), tuple(p1)), ink, wd)
    elif bg == "night":  # a mottled dark sky (larger faint blobs) under stars of many sizes
        big = rng.random(n) < 0.6
        r = np.where(big, sizes * rng.uniform(1.2, 2.4, n), sizes * 0.4)
        faint = np.clip(palette[2:][rng.integers(0, len(cols) - 2, n)] + rng.integers(-25, 26, (n, 3)), 0, 255)
        for box, ink, dim, b in zip(np.stack([xs - r, ys - r, xs + r, ys + r], 1).tolist(), inks,
                                    map(tuple, faint.tolist()), big.tolist()):
            core.draw_ellipse(box, core.draw_ink(dim) if b else ink, 1)
    elif bg == "room":  # wallpaper motifs
        boxes = np.stack([xs, ys, xs + sizes * rng.uniform(0.6, 1.6, n), ys + sizes], 1).tolist()
        for k, (box, ink) in enumerate(zip(boxes, inks)):
            (core.draw_rectangle if k % 2 else core.draw_ellipse)(box, ink, 1)
    else:  # sky (small cloud puffs), snow (flakes and hollows): round-ish, of many sizes
        aspect = rng.uniform(0.7, 1.5, n)
        for box, ink in zip(np.stack([xs, ys, xs + aspect * sizes, ys + sizes], 1).tolist(), inks):
            core.draw_ellipse(box, ink, 1)


def _structure(d: Any, rng: np.random.Generator, w: int, h: int, bg: str, cols: tuple[RGB, ...]) -> tuple[float, float]:
    """Large background features; returns the band (y_lo, y_hi) that gets texture first."""
    if bg == "sky":  # a few big clouds
        for _ in range(int(rng.integers(2, 5))):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.06, 0.14) * max(w, h)
            for k in range(4):
                d.ellipse(_box(cx + (k - 1.5) * r * 0.7, cy + rng.uniform(-0.3, 0.3) * r, r, r * 0.65),
                          fill=_jitter(rng, (246, 248, 252), 6))
        return 0.0, 1.0
    if bg == "sea":  # horizon with a strip of sky
        hy = rng.uniform(0.05, 0.3) * h
        d.rectangle([0, 0, w, hy], fill=_jitter(rng, (160, 205, 240), 12))
        return hy / h, 1.0
    if bg == "room":  # wall and floor
        fy = rng.uniform(0.55, 0.8) * h
        floor = _jitter(rng, (160, 110, 70), 20)
        d.rectangle([0, fy, w, h], fill=floor)
        step = rng.uniform(0.08, 0.16) * w
        for x in np.arange(rng.uniform(0, step), w, step):
            d.line([(x, fy), (x + rng.uniform(-0.2, 0.2) * step, h)], fill=_shade(floor, 0.65), width=2)
        d.rectangle([0, fy - 4, w, fy + 2], fill=(245, 245, 240))
        return 0.0, 1.0
    if bg == "desert":  # dunes
        for k in range(int(rng.integers(2, 4))):
            base_y = rng.uniform(0.3, 0.85) * h
            amp, freq, ph = rng.uniform(0.03, 0.1) * h, rng.uniform(1, 3) * 2 * np.pi / w, rng.uniform(0, 6.3)
            xs = np.linspace(0, w, 40)
            top = [(float(x), float(base_y + amp * np.sin(freq * x + ph))) for x in xs]
            d.polygon(top + [(w, h), (0, h)], fill=_jitter(rng, _shade(cols[2], 1 - 0.08 * k), 10))
        return 0.0, 1.0
    if bg == "snow":  # a far treeline-free horizon and drifts
        hy = rng.uniform(0.0, 0.25) * h
        d.rectangle([0, 0, w, hy], fill=_jitter(rng, (175, 200, 230), 12))
        for _ in range(int(rng.integers(2, 4))):
            cx, cy = rng.uniform(0, w), rng.uniform(hy, h)
            d.ellipse(_box(cx, cy, rng.uniform(0.2, 0.45) * w, rng.uniform(0.03, 0.08) * h),
                      fill=_jitter(rng, (225, 232, 245), 8))
        return hy / h, 1.0
    if bg == "night":  # a faint glow band
        cy = rng.uniform(0.2, 0.8) * h
        d.ellipse(_box(rng.uniform(0, w), cy, w * 0.7, h * 0.12), fill=_jitter(rng, (45, 55, 110), 10))
        return 0.0, 1.0
    if bg == "table":  # planks
        step = rng.uniform(0.15, 0.3) * h
        for y in np.arange(rng.uniform(0, step), h, step):
            d.line([(0, y), (w, y + rng.uniform(-3, 3))], fill=_shade(cols[0], 0.7), width=3)
        return 0.0, 1.0
    return 0.0, 1.0  # grass: texture only


# Regions (x0, y0, x1, y1) as fractions of the image per position.
_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left": (0.03, 0.12, 0.47, 0.88),
    "right": (0.53, 0.12, 0.97, 0.88),
    "top": (0.1, 0.03, 0.9, 0.47),
    "bottom": (0.1, 0.53, 0.9, 0.97),
    "center": (0.25, 0.22, 0.75, 0.78),
}


def _layout(g: Group, w: int, h: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """(cx, cy, size) of each thing of a group, inside its region."""
    x0, y0, x1, y1 = _REGIONS[g.position]
    rw, rh = (x1 - x0) * w, (y1 - y0) * h
    n = g.count
    if n == 1:
        grid = [(0, 0)]
        cols_, rows_ = 1, 1
    elif n == 4 or (n == 3 and rng.random() < 0.3):
        cols_, rows_ = 2, 2
        grid = [(0, 0), (1, 0), (0, 1), (1, 1)][:n]
    elif rw >= rh:
        cols_, rows_ = n, 1
        grid = [(i, 0) for i in range(n)]
    else:
        cols_, rows_ = 1, n
        grid = [(0, i) for i in range(n)]
    cw, ch = rw / cols_, rh / rows_
    size = min(cw, ch) * rng.uniform(0.72, 0.9)
    out = []
    for gx, gy in grid:
        s = size * rng.uniform(0.88, 1.0)
        jx, jy = (cw - s) / 2 * rng.uniform(-0.6, 0.6), (ch - s) / 2 * rng.uniform(-0.6, 0.6)
        out.append((x0 * w + (gx + 0.5) * cw + jx, y0 * h + (gy + 0.5) * ch + jy, s))
    return out


def render_scene(scene: Scene, w: int, h: int, rng: np.random.Generator, *, noise: float = 5.0,
                 layout: np.random.Generator | None = None) -> Any:
    """Draw `scene` as a w x h RGB PIL image: backdrop, structure, texture, things (with outlines), pixel noise.

    layout: the stream that places and shades the things (default `rng`). Two renders with equal `layout` streams and
    sizes but different `rng` show the same things at the same places over a differently lit and textured background.
    """
    lay = rng if layout is None else layout
    from PIL import Image, ImageDraw

    bg = scene.background
    a, b, cols = _PALETTES[bg]
    img = _backdrop(Image, rng, w, h, a, b)
    d = ImageDraw.Draw(img)
    y_lo, y_hi = _structure(d, rng, w, h, bg, cols)
    _texture(d, rng, w, h, bg, cols, y_lo, y_hi)
    for g in scene.groups:
        base = COLOUR_BY_KEY[g.colour].rgb
        for cx, cy, s in _layout(g, w, h, lay):
            DRAWERS[g.thing](d, cx, cy, s, _jitter(lay, base, 12), lay)
    if noise > 0:  # grey grain, added in C: (img + grain - noise) clipped
        from PIL import ImageChops

        k = int(noise)
        grain = Image.fromarray(rng.integers(0, 2 * k + 1, (h, w), dtype=np.uint8))
        img = ImageChops.add(img, Image.merge("RGB", (grain, grain, grain)), 1.0, -k)
    return img


# ---------------------------------------------------------------------------------------------------------------------
# Posters: the caption's own words in large type.
#
# No font that can draw Chinese is assumed (none ships with Pillow, and using whatever a machine has installed would
# make the bytes depend on the machine). A poster therefore prints its title (the pinyin of the words it is about) in
# Pillow's built-in Latin font, and writes every Han character of its text as a pseudo-glyph: a fixed set of strokes
# in a square cell derived from the character's code point, so the same character always looks the same.

_FONTS: dict[int, Any] = {}


def _font(size: int) -> Any:
    from PIL import ImageFont

    if size not in _FONTS:
        _FONTS[size] = ImageFont.load_default(size=size)
    return _FONTS[size]


def _glyph_strokes(ch: str) -> list[tuple[float, float, float, float]]:
    """3-7 strokes (x0, y0, x1, y1 in a unit cell) for a character: horizontals, verticals, sweeps and dots."""
    r = random.Random(ord(ch))
    strokes = []
    for _ in range(r.randint(3, 7)):
        k = r.random()
        if k < 0.35:  # horizontal
            y = r.choice([0.15, 0.3, 0.5, 0.7, 0.88])
            x0 = r.choice([0.05, 0.15, 0.3, 0.5])
            strokes.append((x0, y, min(0.95, x0 + r.uniform(0.3, 0.9)), y))
        elif k < 0.65:  # vertical
            x = r.choice([0.15, 0.3, 0.5, 0.7, 0.85])
            y0 = r.choice([0.05, 0.15, 0.35])
            strokes.append((x, y0, x, min(0.95, y0 + r.uniform(0.35, 0.9))))
        elif k < 0.85:  # sweep
            x0, y0 = r.uniform(0.3, 0.7), r.uniform(0.05, 0.5)
            strokes.append((x0, y0, x0 + r.choice([-1, 1]) * r.uniform(0.2, 0.45), min(0.95, y0 + r.uniform(0.3, 0.5))))
        else:  # dot
            x, y = r.uniform(0.2, 0.8), r.uniform(0.1, 0.8)
            strokes.append((x, y, x + 0.08, y + 0.1))
    return strokes


_GLYPHS: dict[str, list[tuple[float, float, float, float]]] = {}


def draw_han_text(d: Any, x: float, y: float, size: float, text: str, fill: RGB, max_x: float) -> int:
    """Write `text` from (x, y) in cells of `size` px (Han characters as pseudo-glyphs, printable ASCII in the Latin
    font, other punctuation as a dot); stop before `max_x`. Returns how many characters were written."""
    width = max(1, int(size / 9))
    font = None
    for n, ch in enumerate(text):
        if x + size > max_x:
            return n
        if "\u4e00" <= ch <= "\u9fff":
            strokes = _GLYPHS.get(ch)
            if strokes is None:
                strokes = _GLYPHS[ch] = _glyph_strokes(ch)
            for x0, y0, x1, y1 in strokes:
                d.line([(x + x0 * size, y + y0 * size), (x + x1 * size, y + y1 * size)], fill=fill, width=width)
            x += size * 1.08
        elif ch.isascii() and ch.strip():
            font = font or _font(max(10, int(size * 0.8)))
            d.text((x, y), ch, font=font, fill=fill)
            x += d.textlength(ch, font=font) + size * 0.1
        elif ch.strip():
            d.ellipse(_box(x + size * 0.2, y + size * 0.85, width, width), fill=fill)
            x += size * 0.5
        else:
            x += size * 0.5
    return len(text)


def render_poster(title: str, text: str, w: int, h: int, rng: np.random.Generator, *, noise: float = 5.0) -> Any:
    """A text-heavy poster: a coloured band with `title` in large Latin letters, `text` (the caption's words) in large
    type below it, then dense lines of small text (the same words, shuffled) down to the bottom."""
    from PIL import Image, ImageChops, ImageDraw

    light = tuple(int(v) for v in rng.integers(215, 256, 3))
    img = _backdrop(Image, rng, w, h, light, tuple(int(v) for v in rng.integers(205, 256, 3)))  # type: ignore[arg-type]
    d = ImageDraw.Draw(img)
    band = int(h * rng.uniform(0.12, 0.2))
    band_top = 0 if rng.random() < 0.6 else int(h * rng.uniform(0.3, 0.6))
    d.rectangle([0, band_top, w, band_top + band], fill=tuple(int(v) for v in rng.integers(0, 150, 3)))
    font = _font(max(14, band // 2))
    while d.textlength(title, font=font) > w - 16 and font.size > 12:
        font = _font(font.size - 2)
    tx = int(rng.integers(8, max(9, min(40, w - int(d.textlength(title, font=font)) - 8))))
    d.text((tx, band_top + band // 5), title, font=font, fill=(255, 255, 255))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    han = [ch for ch in text if "\u4e00" <= ch <= "\u9fff"] or list("文字")
    margin = int(rng.integers(8, 24))
    y = band + 10 if band_top == 0 else int(rng.integers(8, 16))
    big = float(rng.uniform(0.07, 0.1) * min(w, h))
    words = text.replace(title, "").strip(" ，,")
    for _ in range(3):  # the caption's words, large
        if not words:
            break
        if band_top <= y + big and y < band_top + band:
            y = band_top + band + 8
        if y + big > h - 8:
            break
        words = words[draw_han_text(d, margin, y, big, words, ink, w - margin) :]  # type: ignore[arg-type]
        y += int(big * 1.5)
    small = float(rng.uniform(13, 19))
    while y < h - small - 4:
        if band_top - small <= y < band_top + band:
            y = band_top + band + 6
            continue
        line = "".join(rng.choice(han, int(rng.integers(8, 40))))
        if rng.random() < 0.3:
            line += f" {int(rng.integers(1, 9999))}"
        draw_han_text(d, margin, y, small, line, ink, w - margin)  # type: ignore[arg-type]
        y += int(small * rng.uniform(1.3, 1.7))
    if noise > 0:
        k = int(noise)
        grain = Image.fromarray(rng.integers(0, 2 * k + 1, (h, w), dtype=np.uint8))
        img = ImageChops.add(img, Image.merge("RGB", (grain, grain, grain)), 1.0, -k)
    return img


def poster_title(scene: Scene, rng: random.Random) -> str:
    """The Latin words a poster about `scene` prints large: the pinyin of a thing, sometimes with its colour."""
    g = rng.choice(scene.groups)
    thing, colour = THING_BY_KEY[g.thing].pinyin, COLOUR_BY_KEY[g.colour].pinyin
    return f"{colour} {thing}" if rng.random() < 0.5 and len(thing) + len(colour) <= 11 else thing
