"""How fast `mserve bench` can generate load, against Debian's `wrk`, on one core each.

Method: a trivial endpoint (nginx, one worker, `return 200 "ok"`, pinned to core 1) that outruns
both generators; `wrk -t1 -c64` pinned to core 0, then `mserve bench --concurrency 64` (one
worker) pinned to core 0, each for the same time. Then open loop at 20/50/80% of mserve's
closed-loop maximum: the achieved rate must be within 1% of the requested one, and the send lag
is reported.

    apt-get install -y wrk nginx        # once
    python benchmarks/generator_speed.py [--duration 8] [--out benchmarks/out/generator_speed.json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(tool: str) -> str:
    sbin = Path("/usr/sbin") / tool
    path = shutil.which(tool) or (str(sbin) if sbin.exists() else None)
    if path is None:
        sys.exit(f"{tool} is not installed: apt-get install -y {tool}")
    return path


def run_wrk(url: str, duration: float, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        ["taskset", "-c", "0", need("wrk"), "-t1", f"-c{connections}", f"-d{duration:g}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return {"requests_per_s": float(m.group(1)), "raw": out}


def run_bench(url: str, *load: str, duration: float) -> dict[str, Any]:
    cmd = [
        "taskset", "-c", "0", sys.executable, "-m", "mserve", "bench", url,
        "--protocol", "http", "--method", "GET", *load,
        "--warmup", "2", "--duration", f"{duration:g}", "--window", "2", "--json", "-q",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mserve bench failed:\n{proc.stderr}")
    step: dict[str, Any] = json.loads(proc.stdout)["steps"][0]
    return step


def open_step(url: str, rate: int, duration: float) -> dict[str, Any]:
    """One open-loop step at ``rate``: what was achieved and whether it was on time."""
    step = run_bench(url, "--rate", str(rate), duration=duration)
    achieved = step["achieved_rate_rps"]
    return {
        "requested_rps": rate,
        "achieved_rps": achieved,
        "achieved_error_pct": round(100 * (achieved - rate) / rate, 3),
        "send_lag_ms": step["send_lag_ms"],
        "cpu_percent": step["generator"]["cpu_percent"],
        "on_time": achieved >= 0.99 * rate and step["send_lag_ms"]["p99"] <= 1.0,
        "verdict": step["verdict"],
        "reasons": step["reasons"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    ap.add_argument("--connections", type=int, default=64, help="closed-loop connections")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/generator_speed.json"))
    args = ap.parse_args()
    prefix = Path(tempfile.mkdtemp(prefix="mserve-nginx-"))
    port = free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=port))
    nginx = subprocess.Popen(
        ["taskset", "-c", "1", need("nginx"), "-c", str(prefix / "nginx.conf"), "-p", str(prefix)]
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        time.sleep(1.0)
        wrk = run_wrk(url, args.duration, args.connections)
        closed = run_bench(url, "--concurrency", str(args.connections), duration=args.duration)
        peak = closed["throughput_rps"]
        # the open loop's own maximum: the highest rate it still sends on time (achieved within
        # 1%, lag p99 <= 1 ms); each send there needs its own timer wake-up
        sweep = [open_step(url, round(peak * s), args.duration) for s in (0.2, 0.3, 0.4, 0.5)]
        open_peak = max((s["requested_rps"] for s in sweep if s["on_time"]), default=0)
        open_steps = [
            {**open_step(url, round(open_peak * share), args.duration), "share_of_peak": share}
            for share in (0.2, 0.5, 0.8)
        ]
        beyond = open_step(url, round(peak * 0.8), args.duration)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        shutil.rmtree(prefix, ignore_errors=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wrk_rps": wrk["requests_per_s"],
        "mserve_rps": peak,
        "ratio": round(peak / wrk["requests_per_s"], 3),
        "mserve_cpu_us_per_request": closed["generator"]["cpu_us_per_request"],
        "mserve_cpu_percent": closed["generator"]["cpu_percent"],
        "open_loop_peak_rps": open_peak,
        "open_loop_sweep": sweep,
        "open_loop": open_steps,
        "open_loop_at_80pct_of_closed_peak": beyond,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Measured {r['date']}; each generator pinned to core 0, nginx to core 1, "
        f"{r.get('connections', 64)} connections.",
        "",
        "| generator | requests/s | ratio to wrk |",
        "| --- | ---: | ---: |",
        f"| wrk -t1 | {r['wrk_rps']:,.0f} | 1.00 |",
        f"| mserve bench, 1 worker | {r['mserve_rps']:,.0f} | {r['ratio']:.2f} |",
        "",
        f"mserve bench's own CPU: {r['mserve_cpu_us_per_request']} us per request.",
        "",
        "Open loop: highest rate sent on time (achieved within 1%, lag p99 <= 1 ms): "
        f"{r['open_loop_peak_rps']:,} req/s.",
        "",
        "| open loop | requested/s | achieved/s | error | lag p99 ms | generator CPU | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    rows = [(f"{100 * s['share_of_peak']:.0f}% of the open-loop peak", s) for s in r["open_loop"]]
    rows.append(("80% of the closed-loop peak", r["open_loop_at_80pct_of_closed_peak"]))
    for label, s in rows:
        lines.append(
            f"| {label} | {s['requested_rps']:,} | {s['achieved_rps']:,.1f} | "
            f"{s['achieved_error_pct']:+.2f}% | {s['send_lag_ms']['p99']:.3f} | "
            f"{s['cpu_percent']:.0f}% | {s['verdict']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
