"""Every image type the fetcher's Accept header asks for is fetched, validated and stored end to end (real images made
by Pillow, served by a real HTTP server on 127.0.0.1); a type this Pillow cannot open is not asked for."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, features

from danqing_assets.lib.fetch import decode as D
from danqing_assets.lib.image_store import LocalImageStore
from danqing_assets_tests.httpserver import Resp, ScriptedServer

from .test_fetch import JPEG, cfg, run

#: media type -> Pillow format that encodes it
MEDIA_FORMATS = {
    "image/avif": "AVIF",
    "image/webp": "WEBP",
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "image/x-icon": "ICO",
}


def _encode(fmt: str, size: tuple[int, int] = (64, 48), **kw) -> bytes:
    rng = np.random.default_rng(7)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def _accept_sent(srv: ScriptedServer) -> str:
    srv.route("/probe.jpg", Resp(body=JPEG, content_type="image/jpeg"))
    assert run([srv.url("/probe.jpg")])[srv.url("/probe.jpg")].ok
    (req,) = [q for q in srv.requests if q.path == "/probe.jpg"]
    return req.headers["Accept"]


def _named_types(accept: str) -> list[str]:
    """The concrete media types of an Accept header (wildcards left out)."""
    types = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    return [t for t in types if t and "*" not in t]


@pytest.fixture
def srv():
    with ScriptedServer() as s:
        yield s


def test_every_type_the_accept_header_names_is_fetched_and_decoded(srv: ScriptedServer, tmp_path) -> None:
    accept = _accept_sent(srv)
    named = _named_types(accept)
    assert named and set(named) <= set(MEDIA_FORMATS), accept
    urls = {}
    for mime in named:
        fmt = MEDIA_FORMATS[mime]
        body = _encode(fmt)
        path = f"/img.{fmt.lower()}"
        srv.route(path, Resp(body=body, content_type=mime))
        urls[srv.url(path)] = (fmt, body)
    store = LocalImageStore(tmp_path / "images")
    res = run(list(urls), store)
    for url, (fmt, body) in urls.items():
        r = res[url]
        assert r.ok, (fmt, r)
        assert (r.format, r.width, r.height) == (fmt.lower(), 64, 48)
        assert store.get(r.image_sha256) == body
    assert accept == D.accept_header()


def test_avif_is_asked_for_exactly_when_this_pillow_opens_it(srv: ScriptedServer) -> None:
    accept = _accept_sent(srv)
    assert ("image/avif" in _named_types(accept)) == ("AVIF" in D.openable_formats()) == bool(features.check("avif"))


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_avif_decodes(srv: ScriptedServer) -> None:
    body = _encode("AVIF")
    info = D.inspect_image(body)
    assert (info.format, info.width, info.height) == ("avif", 64, 48), info
    srv.route("/a", Resp(body=body, content_type="application/octet-stream"))  # found by its ftyp signature
    r = run([srv.url("/a")])[srv.url("/a")]
    assert r.ok and r.format == "avif", r


def test_formats_under_the_image_wildcard_and_mpo_decode_too(srv: ScriptedServer) -> None:
    bodies = {f"/w.{fmt.lower()}": (fmt, _encode(fmt)) for fmt in ("GIF", "BMP", "TIFF", "ICO")}
    second = Image.new("RGB", (64, 48), (10, 200, 30))
    buf = io.BytesIO()
    Image.open(io.BytesIO(_encode("JPEG"))).save(buf, "MPO", save_all=True, append_images=[second])
    bodies["/w.mpo"] = ("MPO", buf.getvalue())
    for path, (_fmt, body) in bodies.items():
        srv.route(path, Resp(body=body, content_type="image/whatever"))
    res = run([srv.url(p) for p in bodies])
    for path, (fmt, _body) in bodies.items():
        r = res[srv.url(path)]
        assert r.ok and r.format == fmt.lower(), (fmt, r)


def test_every_safe_format_is_openable_or_optional() -> None:
    # a format Pillow cannot open must not be passed to Image.open (KeyError for every later format)
    can = D.openable_formats()
    assert set(can) <= set(D.SAFE_FORMATS)
    assert set(D.SAFE_FORMATS) - set(can) <= {"AVIF"}
