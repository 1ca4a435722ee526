from danqing_assets.lib.domains import blacklist_match, load_domain_list


def test_shipped_blacklist_has_the_papers_example():
    assert "baidu.com" in load_domain_list()


def test_subdomains_match_but_lookalikes_do_not(tmp_path):
    path = tmp_path / "bl.txt"
    path.write_text("# comment\nBaidu.com  # trailing comment\n\nexample.org.\n", encoding="utf-8")
    bl = load_domain_list(path)
    assert bl == {"baidu.com", "example.org"}
    assert blacklist_match("image.baidu.com", bl) == "baidu.com"
    assert blacklist_match("BAIDU.COM", bl) == "baidu.com"
    assert blacklist_match("notbaidu.com", bl) is None
    assert blacklist_match("baidu.com.cn", bl) is None
    assert blacklist_match(None, bl) is None
    assert blacklist_match("", bl) is None
