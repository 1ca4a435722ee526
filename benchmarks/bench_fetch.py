"""Image-download throughput: danqing_assets.lib.fetch vs img2dataset 1.47.0 vs a bare requests thread pool.

    .venv/bin/python benchmarks/bench_fetch.py            # 10,000 URLs over 50 hosts
    .venv/bin/python benchmarks/bench_fetch.py --n 2000 --repeat 3

Set-up (all local, nothing leaves the machine):
- `--distinct` (300) real photographs (random crops of scikit-image sample photos, 150-400 px wide, JPEG quality chosen
  to land on a random 5-20 KB size), reused under `--n` distinct URLs `http://127.0.0.H:PORT/img/<k>/<i>.jpg`
  spread round-robin over `--hosts` (50) loopback addresses 127.0.0.2 ... (Linux routes all of 127/8 to lo), so
  per-host logic sees 50 hosts.
- Server: nginx (`--server nginx`, default; installed with apt-get if missing, as root) with one worker, keep-alive,
  access log off, a `rewrite` mapping every URL to its pool file, and a real robots.txt on every host. `--server python`
  uses ThreadingHTTPServer processes instead (slower: it then competes for the same CPU).
- Contenders, each timed around its download call (interpreter and import start-up excluded):
  ours: `fetch_images` with every check on (robots.txt, X-Robots-Tag, address checks, Pillow validation, sha256,
    LocalImageStore), `--processes` (2) x `--concurrency` (64 in total); spawning its workers is inside the timing.
    Content addressing means it writes one file per distinct image (300), img2dataset one set of files per URL.
  img2dataset 1.47.0 (in its own venv under benchmarks/_work/, created on first use): output_format "files",
    resize_mode "no", processes_count 2, thread_count 64 (per process), `--n / 8` URLs per shard so both processes work.
  bare: 2 processes x 32 threads of `requests.Session().get(url).content`, no checks, nothing stored.
Results: images/s per contender (median over `--repeat`), the ratios, and a JSON copy in benchmarks/_work/.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "_work"
I2D_VENV = WORK / "i2d-venv"
ROBOTS = b"User-agent: *\nDisallow: /private/\nAllow: /img/\n"


# ------------------------------------------------------------------------------------------------------ data set


def make_images(folder: Path, distinct: int, seed: int = 0) -> list[int]:
    """Write `distinct` JPEGs of 5-20 KB (crops of real photos) to folder/<k>.jpg; return their sizes."""
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket(), skdata.immunohistochemistry()]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = []
    for k in range(distinct):
        ph = photos[k % len(photos)]
        h, w = ph.shape[:2]
        ch, cw = int(rng.integers(h // 3, h)), int(rng.integers(w // 3, w))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        side = int(rng.integers(150, 400))
        img = Image.fromarray(ph[y : y + ch, x : x + cw]).resize((side, max(100, side * ch // cw)))
        target = int(rng.integers(5 * 1024, 20 * 1024))
        best = b""
        for q in range(95, 20, -5):  # the highest quality under a random 5-20 KB target
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=q)
            best = buf.getvalue()
            if len(best) <= target:
                break
        (folder / f"{k}.jpg").write_bytes(best)
        sizes.append(len(best))
    return sizes


def host_ips(n_hosts: int) -> list[str]:
    return [f"127.0.0.{2 + h}" for h in range(n_hosts)]


def make_urls(n: int, distinct: int, ips: list[str], port: int) -> list[str]:
    return [f"http://{ips[i % len(ips)]}:{port}/img/{(i * 7919) % distinct}/{i}.jpg" for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -------------------------------------------------------------------------------------------------------- servers


def start_nginx(www: Path, ips: list[str], port: int) -> subprocess.Popen:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        print("nginx not found: installing it with apt-get (benchmark only)", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "nginx-light"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = WORK / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    listens = "\n".join(f"        listen {ip}:{port};" for ip in ips)
    conf = textwrap.dedent(
        f"""\
        worker_processes 1;
        user root;
        daemon off;
        pid {prefix}/nginx.pid;
        error_log {prefix}/logs/error.log warn;
        events {{ worker_connections 4096; }}
        http {{
            access_log off;
            sendfile on;
            tcp_nodelay on;
            keepalive_requests 100000;
            keepalive_timeout 60s;
            open_file_cache max=1000 inactive=60s;
            client_body_temp_path {prefix}/tmp_body;
            proxy_temp_path {prefix}/tmp_proxy;
            fastcgi_temp_path {prefix}/tmp_fastcgi;
            uwsgi_temp_path {prefix}/tmp_uwsgi;
            scgi_temp_path {prefix}/tmp_scgi;
            types {{ image/jpeg jpg; text/plain txt; }}
            server {{
        {listens}
                root {www};
                location = /robots.txt {{ }}
                location /img/ {{ rewrite ^/img/(\\d+)/\\d+\\.jpg$ /pool/$1.jpg break; }}
            }}
        }}
        """
    )
    (prefix / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return proc


def _python_server(www: str, ip: str, port: int) -> None:
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class H(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def translate_path(self, path: str) -> str:
            parts = path.split("?", 1)[0].strip("/").split("/")
            if parts[:1] == ["img"] and len(parts) == 3:
                return os.path.join(www, "pool", f"{parts[1]}.jpg")
            return os.path.join(www, *parts)

        def log_message(self, *a) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer((ip, port), H)
    srv.serve_forever()


def start_python_servers(www: Path, ips: list[str], port: int) -> list[multiprocessing.Process]:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_python_server, args=(str(www), ip, port), daemon=True) for ip in ips]
    for p in procs:
        p.start()
    return procs


def wait_ready(ips: list[str], port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for ip in ips:
        while True:
            try:
                with socket.create_connection((ip, port), 0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server on {ip}:{port} did not come up") from None
                time.sleep(0.1)


# ------------------------------------------------------------------------------------------------------ contenders


def run_ours(urls: list[str], out: Path, processes: int, concurrency: int) -> dict:
    from danqing_assets.lib.fetch import FetchConfig, fetch_images
    from danqing_assets.lib.image_store import LocalImageStore

    shutil.rmtree(out, ignore_errors=True)
    cfg = FetchConfig(
        processes=processes, concurrency=concurrency, allow_networks=["127.0.0.0/8"], progress_every=10**9
    )
    t0 = time.perf_counter()
    ok = 0
    reasons: dict[str, int] = {}
    for r in fetch_images(urls, LocalImageStore(out), cfg):
        if r.ok:
            ok += 1
        else:
            reasons[r.reason or "?"] = reasons.get(r.reason or "?", 0) + 1
    dt = time.perf_counter() - t0
    return {"ok": ok, "seconds": dt, "images_per_s": ok / dt, "errors": reasons}


def _bare_worker(urls: list[str], threads: int) -> int:
    import requests

    local = threading.local()

    def get(url: str) -> int:
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
        try:
            r = s.get(url, timeout=10)
            return int(r.status_code == 200 and len(r.content) > 0)
        except Exception:
            return 0

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        return sum(ex.map(get, urls))


def run_bare(urls: list[str], processes: int, threads: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pool.map(abs, range(processes))  # start the workers before the clock
        t0 = time.perf_counter()
        parts = [urls[i::processes] for i in range(processes)]
        ok = sum(pool.starmap(_bare_worker, [(p, threads) for p in parts]))
        dt = time.perf_counter() - t0
    return {"ok": ok, "seconds": dt, "images_per_s": ok / dt}


I2D_DRIVER = r"""
import json, sys, time
from img2dataset import download

if __name__ == "__main__":
    url_file, out, n_per_shard = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t0 = time.perf_counter()
    download(
        url_list=url_file, input_format="txt", output_folder=out, output_format="files",
        processes_count=2, thread_count=64, resize_mode="no", number_sample_per_shard=n_per_shard,
        timeout=10, retries=0, enable_wandb=False, distributor="multiprocessing",
    )
    print("I2D_SECONDS", time.perf_counter() - t0, flush=True)
"""


def ensure_img2dataset() -> Path:
    py = I2D_VENV / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import img2dataset"], capture_output=True).returncode == 0
    if not ok:
        print(f"creating {I2D_VENV} with img2dataset==1.47.0 (first run only, a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(I2D_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "img2dataset==1.47.0"], check=True)
    return py


def run_img2dataset(urls: list[str], out: Path) -> dict:
    py = ensure_img2dataset()
    shutil.rmtree(out, ignore_errors=True)
    url_file = WORK / "urls.txt"
    url_file.write_text("\n".join(urls) + "\n")
    driver = WORK / "i2d_driver.py"
    driver.write_text(I2D_DRIVER)
    per_shard = max(100, math.ceil(len(urls) / 8))
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [str(py), str(driver), str(url_file), str(out), str(per_shard)], capture_output=True, text=True, env=env
    )
    secs = None
    for line in proc.stdout.splitlines():
        if line.startswith("I2D_SECONDS"):
            secs = float(line.split()[1])
    if proc.returncode != 0 or secs is None:
        raise RuntimeError(f"img2dataset failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    ok = 0
    for stats in out.glob("*_stats.json"):
        ok += json.loads(stats.read_text()).get("successes", 0)
    return {"ok": ok, "seconds": secs, "images_per_s": ok / secs}


# ----------------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="URLs (default 10,000)")
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--distinct", type=int, default=300, help="distinct images behind the URLs")
    ap.add_argument("--server", choices=("nginx", "python"), default="nginx")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=64, help="our total concurrency")
    ap.add_argument("--bare-threads", type=int, default=32, help="threads per process of the bare baseline")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender (median reported)")
    ap.add_argument("--skip", action="append", default=[], choices=("ours", "img2dataset", "bare"))
    args = ap.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    www = WORK / "www"
    shutil.rmtree(www, ignore_errors=True)
    sizes = make_images(www / "pool", args.distinct)
    (www / "robots.txt").write_bytes(ROBOTS)
    ips = host_ips(args.hosts)
    port = free_port()
    urls = make_urls(args.n, args.distinct, ips, port)
    print(
        f"{args.n} URLs, {args.hosts} hosts, {args.distinct} distinct JPEGs "
        f"({min(sizes) // 1024}-{max(sizes) // 1024} KB, mean {statistics.mean(sizes) / 1024:.1f} KB), "
        f"server {args.server}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    server: subprocess.Popen | None = None
    pyservers: list[multiprocessing.Process] = []
    if args.server == "nginx":
        server = start_nginx(www, ips, port)
    else:
        pyservers = start_python_servers(www, ips, port)
    results: dict[str, list[dict]] = {"ours": [], "img2dataset": [], "bare": []}
    try:
        wait_ready(ips, port)
        run_bare(urls[: min(len(urls), 500)], 1, 8)  # warm the page cache and the server
        for rep in range(args.repeat):
            if "ours" not in args.skip:
                results["ours"].append(run_ours(urls, WORK / "out_ours", args.processes, args.concurrency))
                print(f"[{rep}] ours        {results['ours'][-1]}", flush=True)
            if "img2dataset" not in args.skip:
                results["img2dataset"].append(run_img2dataset(urls, WORK / "out_i2d"))
                print(f"[{rep}] img2dataset {results['img2dataset'][-1]}", flush=True)
            if "bare" not in args.skip:
                results["bare"].append(run_bare(urls, args.processes, args.bare_threads))
                print(f"[{rep}] bare        {results['bare'][-1]}", flush=True)
    finally:
        if server is not None:
            server.send_signal(signal.SIGQUIT)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        for p in pyservers:
            p.terminate()

    med = {k: statistics.median(r["images_per_s"] for r in v) for k, v in results.items() if v}
    print(f"\nimages/s (median of {args.repeat} run{'s' if args.repeat > 1 else ''})")
    labels = {
        "ours": "danqing fetch (all checks)",
        "img2dataset": "img2dataset 1.47.0",
        "bare": f"bare requests {args.processes}x{args.bare_threads}",
    }
    for k, v in med.items():
        print(f"  {labels[k]:<30} {v:8.0f}")
    if "ours" in med:
        for other in ("img2dataset", "bare"):
            if other in med:
                print(f"  ours / {other:<23} {med['ours'] / med[other]:8.2f}x")
    (WORK / "bench_fetch.json").write_text(
        json.dumps({"args": vars(args), "runs": results, "median_images_per_s": med}, indent=2)
    )


if __name__ == "__main__":
    main()
