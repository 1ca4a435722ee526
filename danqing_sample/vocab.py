"""Word banks for the deterministic sample crawl (`danqing_sample.crawl`).

Plain Simplified Chinese words chosen so that `jieba.lcut` segments them predictably, with common characters that a
Chinese BERT vocabulary knows; Traditional captions are made from them with OpenCC. Japanese and English banks make the
non-Chinese pages. Nothing here is read at import time by anything but the sample-crawl generator.
"""

from __future__ import annotations

# (noun, measure word): concrete, photographable things.
NOUNS: tuple[tuple[str, str], ...] = (
    ("风景", "处"), ("山水", "幅"), ("湖泊", "个"), ("河流", "条"), ("森林", "片"), ("草原", "片"), ("沙漠", "片"),
    ("海滩", "片"), ("雪山", "座"), ("瀑布", "条"), ("花朵", "朵"), ("樱花", "朵"), ("荷花", "朵"), ("菊花", "朵"),
    ("玫瑰", "朵"), ("树叶", "片"), ("竹子", "根"), ("松树", "棵"), ("柳树", "棵"), ("城市", "座"), ("街道", "条"),
    ("建筑", "座"), ("寺庙", "座"), ("宫殿", "座"), ("古镇", "个"), ("村庄", "个"), ("桥梁", "座"), ("公园", "个"),
    ("广场", "个"), ("博物馆", "座"), ("图书馆", "座"), ("餐厅", "家"), ("咖啡馆", "家"), ("商场", "家"),
    ("学校", "所"), ("医院", "家"), ("车站", "个"), ("机场", "个"), ("码头", "个"), ("汽车", "辆"), ("自行车", "辆"),
    ("火车", "列"), ("飞机", "架"), ("轮船", "艘"), ("地铁", "列"), ("公交车", "辆"), ("猫咪", "只"), ("小狗", "条"),
    ("熊猫", "只"), ("老虎", "只"), ("狮子", "头"), ("大象", "头"), ("兔子", "只"), ("金鱼", "条"), ("蝴蝶", "只"),
    ("骏马", "匹"), ("孔雀", "只"), ("鸽子", "只"), ("天鹅", "只"), ("鹦鹉", "只"), ("海豚", "只"), ("企鹅", "只"),
    ("绵羊", "只"), ("鸭子", "只"), ("乌龟", "只"), ("松鼠", "只"), ("奶牛", "头"), ("美食", "道"), ("火锅", "锅"),
    ("饺子", "盘"), ("面条", "碗"), ("米饭", "碗"), ("包子", "笼"), ("蛋糕", "块"), ("水果", "盘"), ("苹果", "个"),
    ("葡萄", "串"), ("草莓", "盒"), ("茶叶", "盒"), ("咖啡", "杯"), ("月饼", "盒"), ("粽子", "个"), ("奶茶", "杯"),
    ("啤酒", "瓶"), ("红酒", "瓶"), ("橙子", "个"), ("香蕉", "根"), ("桃子", "个"), ("樱桃", "颗"), ("鸡蛋", "个"),
    ("牛排", "块"), ("寿司", "份"), ("沙拉", "份"), ("烤鸭", "只"), ("豆腐", "块"), ("馒头", "个"), ("汤圆", "碗"),
    ("衣服", "件"), ("裙子", "条"), ("外套", "件"), ("鞋子", "双"), ("帽子", "顶"), ("背包", "个"), ("手表", "块"),
    ("眼镜", "副"), ("项链", "条"), ("围巾", "条"), ("毛衣", "件"), ("衬衫", "件"), ("牛仔裤", "条"), ("运动鞋", "双"),
    ("皮鞋", "双"), ("口红", "支"), ("手套", "副"), ("戒指", "枚"), ("手机", "部"), ("电脑", "台"), ("耳机", "副"),
    ("电视", "台"), ("冰箱", "台"), ("空调", "台"), ("沙发", "张"), ("桌子", "张"), ("椅子", "把"), ("台灯", "盏"),
    ("窗帘", "幅"), ("地毯", "块"), ("书架", "个"), ("键盘", "个"), ("鼠标", "个"), ("音箱", "个"), ("机器人", "个"),
    ("钢琴", "架"), ("吉他", "把"), ("雨伞", "把"), ("扇子", "把"), ("钥匙", "把"), ("花瓶", "个"), ("茶杯", "个"),
    ("风筝", "只"), ("蜡烛", "支"), ("钢笔", "支"), ("铅笔", "支"), ("照片", "张"), ("邮票", "枚"), ("硬币", "枚"),
    ("枕头", "个"), ("灯塔", "座"), ("城堡", "座"), ("高楼", "座"), ("小巷", "条"), ("山峰", "座"), ("梯田", "片"),
    ("稻田", "片"), ("果园", "片"), ("花园", "个"), ("庭院", "个"), ("阳台", "个"), ("厨房", "间"), ("客厅", "间"),
    ("卧室", "间"), ("房子", "座"), ("帐篷", "顶"), ("孩子", "个"), ("老人", "位"), ("学生", "名"), ("老师", "位"),
    ("医生", "位"), ("厨师", "位"), ("农民", "位"), ("工人", "名"), ("游客", "位"), ("新娘", "位"), ("模特", "位"),
    ("运动员", "名"), ("歌手", "位"), ("演员", "位"), ("司机", "位"), ("宝宝", "个"), ("女孩", "个"), ("男孩", "个"),
    ("灯笼", "盏"), ("鞭炮", "串"), ("书法", "幅"), ("国画", "幅"), ("瓷器", "件"), ("刺绣", "幅"), ("剪纸", "张"),
    ("月亮", "轮"), ("星空", "片"), ("云朵", "朵"), ("晚霞", "片"), ("雪花", "片"), ("礼物", "份"), ("玩具", "个"),
    ("图书", "本"), ("杂志", "本"), ("海报", "张"), ("地图", "张"), ("模型", "个"), ("雕塑", "座"), ("喷泉", "座"),
)

# Nouns naming people: never the object of a transitive verb in a generated caption ("品尝老人" would be absurd).
PERSON_NOUNS: frozenset[str] = frozenset({
    "孩子", "老人", "学生", "老师", "医生", "厨师", "农民", "工人", "游客", "新娘", "模特", "运动员", "歌手", "演员",
    "司机", "宝宝", "女孩", "男孩",
})

# Nouns for "在…里" places people are in.
PLACE_NOUNS: tuple[str, ...] = (
    "公园", "广场", "餐厅", "咖啡馆", "商场", "学校", "花园", "庭院", "客厅", "厨房", "图书馆", "博物馆", "车站", "码头",
    "古镇", "村庄", "果园", "稻田", "海滩", "草原", "森林", "小巷", "阳台", "卧室",
)

PEOPLE: tuple[str, ...] = (
    "孩子", "老人", "学生", "老师", "厨师", "农民", "游客", "新娘", "模特", "运动员", "歌手", "宝宝", "女孩", "男孩",
    "一家人", "小朋友", "年轻人", "摄影师",
)

ADJECTIVES: tuple[str, ...] = (
    "漂亮", "可爱", "温暖", "安静", "热闹", "干净", "新鲜", "古老", "现代", "传统", "精致", "简约", "时尚", "舒适",
    "明亮", "宽敞", "高大", "壮观", "优雅", "清新", "浪漫", "神秘", "独特", "经典", "豪华", "朴素", "鲜艳", "柔软",
    "轻便", "美味", "健康", "丰富", "宁静", "辽阔", "茂密", "清澈", "金黄", "翠绿", "雪白", "火红", "蔚蓝", "小巧",
    "复古", "可口", "香甜", "酥脆", "古朴", "雄伟", "秀丽", "繁华", "淡雅", "素雅", "大气", "温馨",
)

# Transitive verbs (verb + object noun).
VERBS_T: tuple[str, ...] = (
    "拍摄", "欣赏", "品尝", "制作", "展示", "种植", "收获", "购买", "分享", "记录", "参观", "游览", "装饰", "挑选",
    "打扫", "整理", "绘制", "观察", "寻找", "收藏",
)

# Intransitive verbs.
VERBS_I: tuple[str, ...] = (
    "散步", "跑步", "游泳", "休息", "等待", "庆祝", "玩耍", "奔跑", "微笑", "聊天", "唱歌", "跳舞", "野餐", "钓鱼",
    "晒太阳", "看书", "写字", "画画",
)

MEASURE_NUMBERS: tuple[str, ...] = ("一", "两", "三", "几", "四", "五")

TIMES: tuple[str, ...] = (
    "清晨", "早上", "中午", "傍晚", "夜晚", "深夜", "春天", "夏天", "秋天", "冬天", "周末", "假期", "春节", "中秋节",
    "国庆节", "元宵节", "端午节", "今年", "去年",
)

PLACES: tuple[str, ...] = (
    "北京", "上海", "广州", "深圳", "杭州", "苏州", "南京", "成都", "重庆", "西安", "武汉", "长沙", "厦门", "青岛",
    "昆明", "丽江", "拉萨", "哈尔滨", "三亚", "天津", "西湖", "黄山", "泰山", "长城", "故宫", "外滩", "鼓浪屿",
    "九寨沟", "洱海", "漓江", "乌镇", "福州", "济南", "郑州", "合肥", "南昌", "贵阳", "兰州", "西宁", "海口", "珠海",
    "扬州", "绍兴", "洛阳", "开封", "大理", "敦煌", "峨眉山", "庐山", "华山", "武夷山", "香港", "澳门", "台北",
)

# Latin tokens that Chinese product captions carry (used where a case / spacing variant is needed).
LATIN_TOKENS: tuple[str, ...] = (
    "iPhone", "LED", "DIY", "MacBook", "Wi-Fi", "USB", "Vlog", "KTV", "SUV", "PVC", "iPad", "NBA", "Logo", "Cosplay",
)

# Words for captions with no noun: adverbs, adjectives, verbs and function words only (checked with jieba anyway).
NO_NOUN_ADVERBS: tuple[str, ...] = (
    "非常", "特别", "格外", "慢慢", "轻轻", "终于", "已经", "依然", "经常", "渐渐", "真的", "很", "太", "都", "也",
    "还", "就", "又", "再", "一直", "马上", "刚刚",
)
NO_NOUN_ADJECTIVES: tuple[str, ...] = (
    "漂亮", "热闹", "干净", "精致", "舒适", "明亮", "宽敞", "高大", "壮观", "优雅", "清新", "浪漫", "神秘", "独特",
    "豪华", "鲜艳", "柔软", "轻便", "健康", "丰富", "辽阔", "茂密", "清澈", "开心", "快乐", "高兴", "美好", "简单",
    "安全", "方便", "好看", "好吃", "舒服", "可爱", "温柔",
)
NO_NOUN_VERBS: tuple[str, ...] = (
    "拍摄", "欣赏", "品尝", "展示", "种植", "收获", "庆祝", "骑行", "阅读", "学习", "休息", "购买", "分享", "探索",
    "等待", "穿过", "飞过", "喜欢", "觉得", "看到", "走", "跑", "笑", "唱", "跳", "玩", "吃", "喝", "来", "去", "回来",
    "出发", "离开", "看看", "试试",
)
NO_NOUN_PRONOUNS: tuple[str, ...] = ("我们", "他们", "大家", "自己", "你们", "她们", "我", "你", "他", "她")

# Two-character promotion words for low-information captions (repeated, with emoji and symbols).
PROMO_WORDS: tuple[str, ...] = (
    "特价", "新品", "秒杀", "限时", "优惠", "热卖", "正品", "现货", "爆款", "清仓", "福利", "好货", "折扣", "团购",
    "抢购", "包邮", "直降", "特惠", "好价", "推荐",
)
LOW_INFO_EMOJI: tuple[str, ...] = ("🔥", "💥", "👍", "✨", "⭐", "❤", "🎉", "💰")
LOW_INFO_SYMBOLS: tuple[str, ...] = ("!!!", "！！！", "~~~~", "###", "★★★", "☆☆☆", "。。。", "$$$", "***", "===")

# Emoji appended to captions that stage 2 should clean and keep.
CLEAN_EMOJI: tuple[str, ...] = ("😍", "👍", "✨", "🌸", "🔥", "💕", "🎉", "😊", "🌟", "☀")

# Invented shop / site names for "-XX网" and "_XX商城" suffixes.
SITE_NAMES: tuple[str, ...] = (
    "优品", "乐购", "好物", "惠买", "美家", "悦享", "尚品", "淘趣", "易选", "佳物", "优选", "嘉禾", "晨光", "远景", "星辰",
    "青橙", "木棉", "海棠", "云起", "拾光",
)
SITE_SUFFIXES: tuple[str, ...] = ("-{}网", "_{}商城", " - {}网", "_{}网", "-{}商城")

# Phrases that end a caption so that a near-duplicate differs only at the end.
SERIES_TAILS: tuple[str, ...] = ("第{}张", "图{}", "第{}期", "{}号作品", "系列之{}", "第{}集")

# Rare CJK Extension B characters: absent from Chinese BERT vocabularies, so each is one [UNK].
RARE_CHARS: tuple[str, ...] = tuple(chr(cp) for cp in range(0x20000, 0x20020)) + tuple(
    chr(cp) for cp in (0x20BB7, 0x2A6A5, 0x21FE8, 0x233B4, 0x24B62, 0x25055, 0x26B15, 0x2815D, 0x29E3D, 0x2A0BA)
)

# Body text for Chinese pages (sections and site words).
SITE_WORDS_PINYIN: tuple[str, ...] = (
    "lvyou", "meishi", "sheying", "jiaju", "shishang", "keji", "tiyu", "qiche", "fangchan", "jiankang", "yule",
    "xinwen", "tuku", "wenhua", "shenghuo", "muying", "chongwu", "huawen", "yuanlin", "dushu", "youxi", "shuma",
    "jiaoyu", "caijing", "nongye", "meizhuang", "fuzhuang", "jiudian", "hunqing", "shougong",
)
SECTIONS: tuple[str, ...] = ("news", "article", "pic", "photo", "life", "travel", "food", "home", "tech", "blog")

# Japanese pages: hiragana-heavy captions and body text.
JA_NOUNS: tuple[str, ...] = (
    "さくら", "ねこ", "いぬ", "やま", "うみ", "そら", "まち", "えき", "りょうり", "すし", "ラーメン", "おちゃ", "しゃしん",
    "けしき", "こうえん", "じんじゃ", "おてら", "でんしゃ", "はなび", "おまつり", "ゆき", "もみじ", "かわ", "みずうみ",
)
JA_ADJECTIVES: tuple[str, ...] = (
    "きれいな", "かわいい", "おいしい", "しずかな", "あたらしい", "ふるい", "たのしい", "あかるい", "やさしい", "すてきな",
)
JA_PLACES: tuple[str, ...] = ("とうきょう", "きょうと", "おおさか", "なら", "ほっかいどう", "おきなわ", "よこはま", "こうべ")
JA_SITE_WORDS: tuple[str, ...] = ("tabi", "gohan", "shashin", "kurashi", "neko", "machi", "hana", "sora")

# English pages and English captions on Chinese pages.
EN_ADJECTIVES: tuple[str, ...] = (
    "red", "blue", "quiet", "busy", "old", "modern", "small", "large", "bright", "dark", "wooden", "golden", "green",
    "sunny", "rainy", "snowy", "crowded", "empty", "colorful", "elegant", "rustic", "tiny", "ancient", "fresh",
)
EN_NOUNS: tuple[str, ...] = (
    "bicycle", "door", "street", "garden", "river", "mountain", "lake", "bridge", "market", "temple", "cat", "dog",
    "child", "kitchen", "table", "window", "boat", "train", "station", "forest", "beach", "flower", "tree", "house",
    "lantern", "teapot", "umbrella", "bookshelf", "harbor", "village", "field", "castle", "statue", "fountain", "cafe",
)
EN_PLACES: tuple[str, ...] = (
    "the old town", "the harbor", "a small village", "the city center", "the mountains", "the countryside",
    "a quiet park", "the riverside", "the night market", "the seaside",
)
EN_TIMES: tuple[str, ...] = (
    "in the morning", "at sunset", "at night", "in winter", "in spring", "after the rain", "on a sunny day",
    "during the festival", "in the evening", "at noon",
)
EN_VERBS: tuple[str, ...] = (
    "standing", "resting", "waiting", "sitting", "glowing", "shining", "leaning", "floating", "hanging", "sleeping",
)
EN_SITE_WORDS: tuple[str, ...] = ("travel", "photos", "kitchen", "garden", "daily", "journal", "design", "outdoor")

# Unsafe captions the sample crawl plants (stage 1 `unsafe_text` and stage 2 `sensitive_text`). Hand-written in the
# style of real web spam for issue 15 as whole ads, not as terms of the filter's lexicon
# (danqing_assets/data/safety_lexicon.txt): the crawl must not plant the filter's own terms. Each is a self-contained ad, so it stays what it is inside any
# caption; stage-2 ones are soft NSFW or contact / promotion spam, never stage-1 material.
UNSAFE_SNIPPETS: tuple[str, ...] = (
    "线上真人百家乐注册就送彩金", "澳门赌场官网开户首存返水", "足球投注赔率最高的平台", "时时彩计划群稳赚带你上岸",
    "真钱棋牌炸金花随时提现", "六合彩特码内部资料", "同城上门服务包夜快餐", "高清无码成人影片免费看",
    "一对一视频裸聊真人秀", "日本AV女优合集下载", "出售冰毒麻古货到付款", "大麻种子出售包邮发货", "摇头丸K粉一手货源",
    "出售仿真枪钢珠枪可发射", "气枪铅弹货到付款", "管制刀具出售开刃军刺", "办理身份证驾驶证可查可验",
    "代开增值税发票真票", "信用卡套现秒到账", "斩首视频完整版血腥现场", "无痛自杀方法教程",
)
SENSITIVE_SNIPPETS: tuple[str, ...] = (
    "加微信看更多私房照", "性感美女大尺度写真", "比基尼美女湿身诱惑", "宅男福利美女半裸写真", "制服诱惑黑丝美腿",
    "扫码进群免费领红包", "加薇信咨询诚招代理", "代刷粉丝点赞播放量", "日赚五百轻松副业入群", "明星走光瞬间合集",
)
