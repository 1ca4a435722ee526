"""The stage-2 caption cleaning rules (`clean_caption`) and the share of characters they keep."""

from __future__ import annotations

import functools
import html
import re
from typing import Any

from danqing_assets.lib.text.normalize import _WORDLIKE_RE, _CharRuns, _sub, _unicode_tables, as_text, strip_controls

# Full-width ASCII letters / digits and the ideographic space -> ASCII (punctuation stays full-width: it is normal in
# Chinese text).
_FULLWIDTH_TABLE: dict[int, Any] = {
    **{cp: cp - 0xFEE0 for cp in range(0xFF10, 0xFF1A)},
    **{cp: cp - 0xFEE0 for cp in range(0xFF21, 0xFF3B)},
    **{cp: cp - 0xFEE0 for cp in range(0xFF41, 0xFF5B)},
    0x3000: " ",
}

_FULLWIDTH_RE = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\u3000]")
_TAG_RE = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]{0,500})?/?>", re.S)
_ENTITY_RESIDUE_RE = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]{1,10}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});?")
_TLDS = "com|cn|net|org|edu|gov|info|biz|cc|tv|top|xyz|io|me|hk|tw|vip|shop|site|co|mobi|club|online|wang|ltd"
_URL_RE = re.compile(
    r"(?:https?|ftp)://[^\s<>\"'，。、；！？）】」》]+"  # scheme URLs (stop at CJK punctuation)
    r"|(?<![A-Za-z0-9])www\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?:[/?#][!-~]*)?"  # www.example.com/...
    r"|[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"  # e-mail addresses
    rf"|(?<![A-Za-z0-9@.-])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?i:{_TLDS})(?:\.[a-z]{{2}})?(?![A-Za-z0-9-])"
    r"(?:[/?#][!-~]*)?"  # bare domains: example.com, m.example.com.cn/path
    r"|(?<![A-Za-z0-9])[A-Za-z0-9_-]{1,64}\.(?i:jpe?g|png|gif|webp|bmp|tiff?|heic)(?![A-Za-z0-9])"  # image file names
)
_SEPARATORS = "-_|｜—–－＿~～·•:：/"
# Words that end a site name or an SEO suffix: "_XX网", "|XX官网", "- 百度图片", "_XX商城", "XX旗舰店".
_SITE_WORDS = (  # generic words such as 新闻 or 在线 alone would eat real content ("- 升旗仪式新闻")
    "网|网站|官网|官方网站|商城|论坛|社区|博客|百科|门户|图库|旗舰店|专卖店|官方店"
    "|百度图片|百度|淘宝|天猫|京东|拼多多|搜狐|新浪|新浪新闻|网易|网易新闻|腾讯|腾讯新闻|凤凰|今日头条|知乎|豆瓣|微博"
    "|汽车之家|大众点评|携程|马蜂窝|小红书|抖音|快手|哔哩哔哩|bilibili|搜狗|中关村在线|图片大全|高清大图|免费下载"
    "|在线观看|在线阅读"
)
_SEP = re.escape(_SEPARATORS)
_SUFFIX_RE = re.compile(  # starts with a character class, so `re` scans for separators quickly
    rf"[{_SEP}][{_SEP}]*\s*[^{_SEP}]{{0,20}}?(?:{_SITE_WORDS})\s*$", re.I
)
_PREFIX_SITE_RE = re.compile(rf"^\s*[【\[（(]\s*[^】\]）)]{{0,20}}?(?:{_SITE_WORDS})\s*[】\]）)]", re.I)
_AD_WORDS = (  # anywhere inside a short bracket: 【限时特价】, 【新品推荐】
    "特价|包邮|促销|热卖|爆款|秒杀|限时|抢购|优惠|折扣|打折|清仓|新品|正品|现货|直降|满减|领券|团购|预售|热销|免邮|批发"
    "|代购|厂家直销|顺丰|推荐"
)
_MARKER_WORDS = "图|组图|多图|高清图|高清|视频|转载|原创"  # the whole bracket content: 【图】, [组图], （多图）
_AD_TAG_RE = re.compile(
    rf"[【\[]\s*[^【】\[\]]{{0,8}}?(?:{_AD_WORDS})[^【】\[\]]{{0,8}}\s*[】\]]"
    rf"|[【\[（(]\s*(?:{_MARKER_WORDS})\s*[】\]）)]"
)

_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),  # mahjong, cards, enclosed alphanumerics, regional indicators, pictographs, emoticons ...
    (0x2600, 0x27BF),  # miscellaneous symbols, dingbats
    (0x2B00, 0x2BFF),  # miscellaneous symbols and arrows
    (0x2300, 0x23FF),  # miscellaneous technical (⌚ ⏰ ⏩)
    (0x2190, 0x21FF),  # arrows
    (0x2500, 0x25FF),  # box drawing, block elements, geometric shapes (■ ● ◆ ▲)
    (0xFE00, 0xFE0F),  # variation selectors
    (0x200D, 0x200D),  # zero-width joiner
    (0x20E3, 0x20E3),  # combining keycap
    (0xE0020, 0xE007F),  # emoji tag sequences
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x2122, 0x2122), (0x3030, 0x3030), (0x303D, 0x303D),  # © ® ™ 〰 〽
    (0xFFFD, 0xFFFD),  # replacement character (undecodable input)
)  # fmt: skip
# Symbols that carry meaning in captions and stay: letter-like symbols (℃ №) and CJK unit squares (㎡ ㎏ ㏄).
_KEEP_SYMBOL_RANGES = ((0x2100, 0x2121), (0x2123, 0x214F), (0x3300, 0x33FF))


@functools.cache
def _noise_runs() -> _CharRuns:
    tables = _unicode_tables()
    keep = {cp for a, b in _KEEP_SYMBOL_RANGES for cp in range(a, b + 1)}
    noise = {cp for cp in tables["symbols"] if cp not in keep}  # So / Sk / private use (icon fonts)
    noise.update(cp for a, b in _EMOJI_RANGES for cp in range(a, b + 1))
    noise.update(tables["control"])
    return _CharRuns(noise)


_PUNCT_REPEAT_RE = re.compile(r"[!?,;:！？。，、；：](?<=(.))\1+")  # starts with a class: fast scan
_DECOR_RUN_RE = re.compile(r"([#*~=_^+|\\/<>～＃＊＝＿｜＋￣\-·•])\1{2,}")
_HASH_RE = re.compile(r"(?<![A-Za-z0-9])#+")
_DOTS_RE = re.compile(r"\.{4,}")
_LONG_DASH_RE = re.compile(r"([…—])\1{2,}")
_EMPTY_BRACKETS_RE = re.compile(r"[【\[（(《「『〔<{]\s*[】\]）)》」』〕>}]")
_EDGE_SEPARATORS = " " + _SEPARATORS + ",，、;；/\\"


def _noise_replacement(m: re.Match[str]) -> str:
    """Removed noise leaves a space only between two ASCII letters/digits ("nice🔥day" -> "nice day")."""
    s, a, b = m.string, m.start(), m.end()
    if a > 0 and b < len(s) and s[a - 1].isascii() and s[a - 1].isalnum() and s[b].isascii() and s[b].isalnum():
        return " "
    return ""


def _nonspace_len(folded: str) -> int:
    """Characters other than spaces of a whitespace-folded text."""
    return len(folded) - folded.count(" ")


def _clean_structural(text: str) -> str:
    """HTML remnants, URLs / e-mails / file names, site suffixes and ad tags; whitespace folded."""
    if not text.isascii() and _FULLWIDTH_RE.search(text):
        text = text.translate(_FULLWIDTH_TABLE)
    if "&" in text:
        for _ in range(2):  # double-escaped "&amp;nbsp;" needs two rounds
            unescaped = html.unescape(text)
            if unescaped == text:
                break
            text = unescaped
        text = _sub(_ENTITY_RESIDUE_RE, " ", text)
    if "<" in text:
        text = _sub(_TAG_RE, " ", text)
    if "." in text or "@" in text:
        text = _sub(_URL_RE, " ", text)
    text = " ".join(text.split())
    if not text.isascii():
        if "【" in text or "[" in text or "（" in text or "(" in text:
            text = _sub(_AD_TAG_RE, " ", text)
            m = _PREFIX_SITE_RE.search(text)
            if m and _WORDLIKE_RE.search(text, m.end()):
                text = text[m.end() :]
        for _ in range(3):  # "标题_栏目_XX网 - 百度图片": strip up to three stacked suffixes
            m = _SUFFIX_RE.search(text)
            if not m or not _WORDLIKE_RE.search(text, 0, m.start()):
                break
            text = text[: m.start()].rstrip()
        text = " ".join(text.split())
    return text


def _clean_noise(text: str) -> str:
    """Emoji, symbols, control / private-use characters, decorative runs and repeated punctuation; edges trimmed."""
    if not text.isascii():
        text = _sub(_noise_runs().pick(text), _noise_replacement, text)
    elif not text.isprintable():
        text = strip_controls(text)
    text = _sub(_DECOR_RUN_RE, " ", text)
    if "#" in text:
        text = _sub(_HASH_RE, " ", text)
    text = _sub(_PUNCT_REPEAT_RE, r"\1", text)
    if "...." in text:
        text = _DOTS_RE.sub("...", text)
    if "……" in text or "——" in text:
        text = _LONG_DASH_RE.sub(r"\1\1", text)
    text = _sub(_EMPTY_BRACKETS_RE, " ", text)
    return " ".join(text.split()).strip(_EDGE_SEPARATORS)


def clean_caption(text: str | None) -> str:
    """The stage-2 cleaned caption (input is expected to be Traditional -> Simplified converted already).

    Rules, in order:
    1. sanitise: None -> "", lone surrogates -> U+FFFD (removed in step 7);
    2. full-width letters and digits -> ASCII, ideographic space -> space (full-width punctuation stays);
    3. HTML: entities decoded (twice, for double escaping), undecodable entity residue and tags / comments removed;
    4. URLs (scheme or www.), e-mail addresses, bare domains (example.com, m.example.com.cn/a) and image file names
       (IMG_0001.JPG) removed;
    5. bracketed ad tags (a short 【...】 / [...] containing 特价, 包邮, 新品, 推荐 ...: `_AD_WORDS`) and marker
       tags (the whole bracket is 图, 组图, 多图, 高清, 视频, 转载 or 原创) removed; 【中国地图】 stays; a leading site
       tag ("【XX网】标题") removed;
    6. site / SEO suffixes removed, up to three stacked ones: a separator (- _ | ｜ — · : /) followed by up to 20
       characters ending in a site word (网, 官网, 商城, 论坛, 旗舰店, 百度图片, 淘宝, 知乎, 图片大全 ...: `_SITE_WORDS`),
       at the end of the caption, and only when something remains before it ("春天的花_XX网" -> "春天的花",
       "百度图片" stays). A separated tail that happens to end in 网 ("运动器材 - 羽毛球网") is removed too;
    7. emoji and pictographs, other symbols (categories So / Sk: ★ ● ♥ ♂ box drawing ...), private-use characters
       (icon fonts), control and format characters and U+FFFD removed; kept: letter-like symbols (℃ №) and CJK unit
       squares (㎡ ㎏). Removal leaves a space only between two ASCII letters or digits;
    8. decorative runs of 3+ identical `# * ~ = _ ^ + | \\ / < > -` (and full-width forms) removed, hashtag marks "#"
       not after a letter/digit removed, repeated punctuation (! ? , ; : ！？。，、；：) collapsed ("!!!" -> "!",
       "。。。" -> "。"), "......" -> "...", "………" -> "……", empty brackets removed;
    9. whitespace runs -> one space; separators and commas trimmed from both ends.
    """
    return _clean_noise(_clean_structural(as_text(text)))


def _clean_with_retention(text: str) -> tuple[str, float]:
    """The cleaned caption and the share of its characters that survived the noise rules (7-8)."""
    structural = _clean_structural(text)
    clean = _clean_noise(structural)
    n_struct = _nonspace_len(structural)
    return clean, (_nonspace_len(clean) / n_struct if n_struct else 0.0)
