#!/usr/bin/env python3
"""Simulator benchmarks, printed as JSON.

* ``evtchn_pingpong``: two processes (a domU and dom0) bounce an event over one
  interdomain event channel: notify, wait, unmask.  Round trips per second.
* ``grant_page_round_trip``: the same two processes share a granted page: the
  frontend writes a sequence number and notifies, the backend reads it, writes an
  acknowledgement in the page and notifies back (the shape of a tpmif request).
* ``raw_socket_pingpong``: the baseline: one byte bounced over a socketpair between
  two processes, the cheapest cross-process wake-up Python has.  The ratios say how
  much the hypervisor daemon in the middle costs (each event crosses it once).
* ``host_start_s``: time for `SimHost.start` (daemon and xenstored ready).

Each figure is the best of ``--repeat`` runs, the three interleaved, because the
machine may be busy; ``loadavg_1min`` says how busy.  Exit status 1 if any wake-up
was lost or any resource leaked.

Usage: ``python3 bench/bench_sim.py [--rounds N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvgrub_py.sim.testing import (  # noqa: E402
    evtchn_initiator,
    evtchn_responder,
    pingpong_backend,
    pingpong_frontend,
    run_in_child,
    temporary_host,
)

spawn = multiprocessing.get_context("spawn")


def pair(first: Any, second: Any, host_dir: str, domid: int, rounds: int) -> dict[str, Any]:
    a, b = spawn.Pipe()
    results = spawn.Queue()
    children = [
        spawn.Process(target=run_in_child, args=(first, results, host_dir, domid, rounds, a)),
        spawn.Process(target=run_in_child, args=(second, results, host_dir, domid, rounds, b)),
    ]
    for child in children:
        child.start()
    out = {}
    for _ in children:
        name, result = results.get(timeout=300)
        if not isinstance(result, dict):
            raise RuntimeError(f"{name}: {result}")
        out[name] = result
    for child in children:
        child.join(30)
    return out


def raw_bouncer(sock: socket.socket, rounds: int) -> None:
    for _ in range(rounds):
        sock.recv(1)
        sock.send(b"x")


def raw_socket_pingpong(rounds: int) -> float:
    ours, theirs = socket.socketpair()
    child = spawn.Process(target=raw_bouncer, args=(theirs, rounds))
    child.start()
    theirs.close()
    ours.send(b"x")  # warm up: the child is running once it answers
    ours.recv(1)
    start = time.perf_counter()
    for _ in range(rounds - 1):
        ours.send(b"x")
        ours.recv(1)
    seconds = time.perf_counter() - start
    child.join(30)
    ours.close()
    return (rounds - 1) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="best of N runs of each (the machine may be busy)"
    )
    args = parser.parse_args()
    rounds = args.rounds

    evt_rates, page_rates, raw_rates, timeouts = [], [], [], 0
    start = time.perf_counter()
    with temporary_host(xenstored=True, prefix="bench") as host:
        host_start = time.perf_counter() - start
        domid = host.create_domain(introduce=False)
        for _ in range(args.repeat):  # interleaved, so load changes hit all three alike
            evt = pair(evtchn_initiator, evtchn_responder, str(host.dir), domid, rounds)
            evt_rates.append(rounds / evt["evtchn_initiator"]["seconds"])
            page = pair(pingpong_frontend, pingpong_backend, str(host.dir), domid, rounds)
            front = page["pingpong_frontend"]
            page_rates.append(front["rounds"] / front["seconds"])
            raw_rates.append(raw_socket_pingpong(rounds))
            timeouts += evt["evtchn_initiator"]["timeouts"] + front["timeouts"]
            timeouts += page["pingpong_backend"]["timeouts"]
        leftover = host.stats().total.resources

    evt_rate, page_rate, raw_rate = max(evt_rates), max(page_rates), max(raw_rates)
    report = {
        "rounds": rounds,
        "repeat": args.repeat,
        "host_start_s": round(host_start, 3),
        "evtchn_pingpong": {
            "round_trips_per_s": round(evt_rate),
            "us_per_round_trip": round(1e6 / evt_rate, 1),
        },
        "grant_page_round_trip": {
            "round_trips_per_s": round(page_rate),
            "us_per_round_trip": round(1e6 / page_rate, 1),
        },
        "raw_socket_pingpong": {
            "round_trips_per_s": round(raw_rate),
            "us_per_round_trip": round(1e6 / raw_rate, 1),
        },
        "ratio_evtchn_to_raw": round(evt_rate / raw_rate, 3),
        "ratio_grant_page_to_raw": round(page_rate / raw_rate, 3),
        "lost_wakeups": timeouts,
        "resources_left": leftover,
        "loadavg_1min": os.getloadavg()[0],
    }
    print(json.dumps(report, indent=2))
    return 0 if timeouts == 0 and leftover == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
