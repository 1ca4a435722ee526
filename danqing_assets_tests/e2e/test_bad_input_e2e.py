"""A snapshot with broken files still materializes: each problem is counted in `warc_errors` (and logged with file
and offset), everything readable is extracted."""

import gzip

import dagster as dg
import pytest

from danqing_assets.lib.warehouse import Warehouse
from danqing_assets_tests.e2e.conftest import run_pipeline
from danqing_assets_tests.lib.test_warc import Warc, html_page

pytestmark = pytest.mark.slow

CAPTION = "一只橘色的小猫在阳光明媚的窗台上安静地睡觉"


def _good(path, n=3):
    wf = Warc(path)
    for i in range(n):
        wf.response(f"http://good.example.cn/{i}.html", html_page(f'<img src="/{i}.jpg" alt="{CAPTION}{i}">').encode())
    return wf.close()


def test_broken_files_are_counted_and_the_run_goes_on(tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    _good(crawl / "a-good.warc.gz")
    whole = _good(tmp_path / "b.warc.gz").read_bytes()
    (crawl / "b-truncated.warc.gz").write_bytes(whole[: len(whole) - 200])  # last gzip member cut short
    (crawl / "c-not-a-warc.warc.gz").write_bytes(gzip.compress(b"<html>just a page</html>"))
    (crawl / "d-empty.warc").write_bytes(b"")
    deep = html_page("<div>" * 5000 + f'<img src="/deep.jpg" alt="{CAPTION}">' + "</div>" * 5000)
    huge = html_page(f'<img src="/big.jpg" alt="{CAPTION}">' + "<p>" + "字" * (4 * 1024 * 1024) + "</p>")
    wf = Warc(crawl / "e-odd.warc.gz")
    wf.response("http://odd.example.cn/deep.html", deep.encode())
    wf.response("http://odd.example.cn/huge.html", huge.encode())
    wf.response("http://odd.example.cn/bad-bytes.html", html_page(f'<img src="/x.jpg" alt="{CAPTION}">').encode("gbk")
                + b"\xff\xfe\x80", content_type="text/html; charset=gbk")
    wf.close()

    home = tmp_path / "home"
    instance = dg.DagsterInstance.ephemeral()
    result = run_pipeline(home, crawl, through="source_selected_pairs", instance=instance)
    assert result.success
    md = next(m.materialization.metadata for m in result.get_asset_materialization_events()
              if m.asset_key.to_user_string() == "raw_pairs")
    by_kind = md["warc_errors_by_kind"].value
    assert md["warc_errors"].value == sum(by_kind.values()) >= 4
    assert {"not_a_warc", "page_truncated"} <= set(by_kind)
    assert {"truncated_gzip", "truncated_record", "corrupt_gzip"} & set(by_kind)
    raw = Warehouse(home).read("raw_pairs", "sample")
    urls = set(raw["image_url"])
    assert {"http://good.example.cn/0.jpg", "http://odd.example.cn/deep.jpg", "http://odd.example.cn/big.jpg",
            "http://odd.example.cn/x.jpg"} <= urls
    assert raw.filter(raw["warc_file"] == "b-truncated.warc.gz").height >= 1  # what precedes the damage is kept
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("WARC error not_a_warc in c-not-a-warc.warc.gz at offset" in m for m in logs)
