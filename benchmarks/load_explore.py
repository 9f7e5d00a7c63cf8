"""A bounded load test of the explorer on loopback: simulated clients for a fixed time.

Starts ``python -m fastsurface explore --no-browser`` on a free port of 127.0.0.1 (nothing
else is contacted), warms it up, then runs ``--clients`` threads for ``--seconds``. Each
client sends one request after another on its own keep-alive connection, with its own
client id and request numbers, like one open page: mostly new windows (50 to 200 values
per axis, never the same twice), some short training paths (1 to 3 epochs of the seed's
8,000 training samples, any optimiser, random start) and a few bad values, which must be
refused with HTTP 400. Afterwards the server is stopped with SIGINT (it must exit with
status 130) and the script prints the requests, every status, the errors (anything but
the expected status, or no answer), latency percentiles per kind (queueing behind the
single engine worker included), and the server's resident memory before and after the
load (``VmRSS``), every 5 s during it, and at its peak (``VmHWM``), from ``/proc``.

Usage: ``python benchmarks/load_explore.py [--clients 20] [--seconds 60] [--json FILE]``;
exit status 1 when a request failed or the server did not stop cleanly.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("surface", "path", "refused")
MAX_SECONDS, MAX_CLIENTS = 600, 100
_SAMPLE_SECONDS = 5.0


@dataclass
class Tally:
    """What the clients saw: latency (s) per kind, statuses, failures."""

    latency: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def main() -> int:
    arguments = _arguments()
    server = subprocess.Popen(
        [sys.executable, "-m", "fastsurface", "explore", "--no-browser", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    try:
        port = int(server.stdout.readline().split("http://127.0.0.1:")[1].split("/")[0])
        _warm_up(port)
        before = _memory(server.pid)
        tally = Tally()
        deadline = time.monotonic() + arguments.seconds
        clients = [threading.Thread(target=_client, args=(port, n, deadline, tally)) for n in range(arguments.clients)]
        started = time.monotonic()
        for client in clients:
            client.start()
        series = _sample_memory(server.pid, clients)
        elapsed = time.monotonic() - started
        after = _memory(server.pid)
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=60)
    finally:
        server.kill()
    report = _report(arguments, tally, elapsed, before, after, series, server.returncode, stderr)
    print(_summary(report))
    if arguments.json is not None:
        Path(arguments.json).write_text(json.dumps(report, indent=2))
    clean = report["server"]["exit_status"] == 130 and report["server"]["stderr"] == "fastsurface: explorer stopped\n"
    return 0 if not tally.errors and clean else 1


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20, help=f"simulated clients, 1 to {MAX_CLIENTS}")
    parser.add_argument("--seconds", type=float, default=60.0, help=f"duration, at most {MAX_SECONDS}")
    parser.add_argument("--json", help="also write the whole report, every status and error, to this file")
    arguments = parser.parse_args()
    if not 1 <= arguments.clients <= MAX_CLIENTS or not 0 < arguments.seconds <= MAX_SECONDS:
        parser.error(f"--clients must be in [1, {MAX_CLIENTS}] and --seconds in (0, {MAX_SECONDS}]")
    return arguments


def _warm_up(port: int) -> None:
    """One request of each kind, so that the memory measured before includes what the
    server loads once (torch's optimisers, the seed data, plotly.js)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for endpoint, body in (("surface", {}), ("path", {"path": "warm", "epochs": 1})):
        status, _ = _post(connection, endpoint, body)
        assert status == 200, f"warm-up {endpoint}: HTTP {status}"
    connection.request("GET", "/plotly.min.js")
    connection.getresponse().read()
    connection.close()


def _client(port: int, number: int, deadline: float, tally: Tally) -> None:
    """Requests one after another until ``deadline``, as one page would send them."""
    chance = random.Random(number)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    sequence: Counter[str] = Counter()
    while time.monotonic() < deadline:
        kind = chance.choices(KINDS, weights=(0.7, 0.2, 0.1))[0]
        endpoint, body = _request(kind, chance)
        work = body.get("path", endpoint)
        sequence[work] += 1
        body.update(client=f"load{number}", seq=sequence[work])
        started = time.perf_counter()
        try:
            status, content = _post(connection, endpoint, body)
        except (OSError, http.client.HTTPException) as error:
            status, content = 0, f"{type(error).__name__}: {error}".encode()
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        seconds = time.perf_counter() - started
        expected = 400 if kind == "refused" else 200
        with tally.lock:
            tally.statuses[str(status)] += 1
            tally.latency[kind].append(seconds)
            if status != expected:
                tally.errors.append(f"{kind}: HTTP {status}: {content[:200]!r}")
    connection.close()


def _request(kind: str, chance: random.Random) -> tuple[str, dict[str, object]]:
    if kind == "surface":
        low1, low2 = chance.uniform(-4, 2), chance.uniform(-4, 2)
        span1, span2 = chance.uniform(0.1, 2), chance.uniform(0.1, 2)
        step = max(span1, span2) / chance.randint(50, 200)
        return "surface", {"w1": [low1, low1 + span1], "w2": [low2, low2 + span2], "step": step}
    if kind == "path":
        start = [round(chance.uniform(-2, 2), 3), round(chance.uniform(-2, 2), 3)]
        optimiser = chance.choice(("sgd", "momentum", "adam"))
        return "path", {"path": "p", "start": start, "epochs": chance.randint(1, 3), "optimiser": optimiser}
    return "surface", {"step": -chance.random()}


def _post(connection: http.client.HTTPConnection, endpoint: str, body: dict[str, object]) -> tuple[int, bytes]:
    connection.request("POST", f"/api/{endpoint}", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def _sample_memory(pid: int, clients: list[threading.Thread]) -> list[float]:
    """The server's resident memory (MiB) every ``_SAMPLE_SECONDS`` until the clients are done."""
    series = []
    while any(client.is_alive() for client in clients):
        series.append(_memory(pid)["VmRSS"] / 2**20)
        for client in clients:
            client.join(timeout=max(0.0, _SAMPLE_SECONDS / len(clients)))
    return series


def _memory(pid: int) -> dict[str, int]:
    """The process's resident and peak resident memory, bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _report(
    arguments: argparse.Namespace,
    tally: Tally,
    elapsed: float,
    before: dict[str, int],
    after: dict[str, int],
    series: list[float],
    exit_status: int | None,
    stderr: str,
) -> dict[str, object]:
    latency = {
        kind: {
            "count": len(values),
            **{f"p{q}_ms": float(np.percentile(values, q)) * 1e3 for q in (50, 95, 99)},
            "max_ms": max(values) * 1e3,
        }
        for kind, values in tally.latency.items()
        if values
    }
    requests = sum(tally.statuses.values())
    return {
        "clients": arguments.clients,
        "seconds": elapsed,
        "requests": requests,
        "requests_per_second": requests / elapsed,
        "statuses": dict(tally.statuses),
        "errors": len(tally.errors),
        "first_errors": tally.errors[:10],
        "latency": latency,
        "memory": {
            "rss_before_mib": before["VmRSS"] / 2**20,
            "rss_after_mib": after["VmRSS"] / 2**20,
            "peak_rss_mib": after["VmHWM"] / 2**20,
            f"rss_every_{_SAMPLE_SECONDS:g}_s_mib": series,
        },
        "server": {"exit_status": exit_status, "stderr": stderr},
    }


def _summary(report: dict[str, object]) -> str:
    memory, latency = report["memory"], report["latency"]
    lines = [
        f"{report['clients']} clients for {report['seconds']:.0f} s: {report['requests']} requests "
        f"({report['requests_per_second']:.1f}/s), statuses {report['statuses']}, errors {report['errors']}",
        *(
            f"  {kind:<8} n={v['count']:<5} p50 {v['p50_ms']:.0f} ms, p95 {v['p95_ms']:.0f} ms, "
            f"p99 {v['p99_ms']:.0f} ms, max {v['max_ms']:.0f} ms"
            for kind, v in latency.items()
        ),
        f"  server RSS {memory['rss_before_mib']:.0f} MiB before, {memory['rss_after_mib']:.0f} MiB after, "
        f"peak {memory['peak_rss_mib']:.0f} MiB; exit status {report['server']['exit_status']}",
        f"  server RSS every {_SAMPLE_SECONDS:g} s (MiB): "
        + " ".join(f"{value:.0f}" for value in memory[f"rss_every_{_SAMPLE_SECONDS:g}_s_mib"]),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
