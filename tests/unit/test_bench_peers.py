"""`make bench --peers`: run_all.sh's lines read back, and the ratios to PgQueuer."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import serve_bench

RUN_ALL = """peer deliveries/s p50_ms p99_ms   (N=50000, url=http://127.0.0.1:18080/)
pgqueuer 2000 2.3 3.8
pgqueuer@200/s 200 6.4 14.3
procrastinate FAILED - - (see /tmp/peers_logs/procrastinate.*)
limit_aiohttp 2814 - -   (no queue, no persistence; conc=100)
"""


def test_the_peers_lines_are_read_and_failed_ones_left_out() -> None:
    peers = serve_bench.parse_peers(RUN_ALL)
    assert peers == {
        "pgqueuer": {"per_s": 2000.0, "p50_ms": 2.3, "p99_ms": 3.8},
        "pgqueuer@200/s": {"per_s": 200.0, "p50_ms": 6.4, "p99_ms": 14.3},
        "limit_aiohttp": {"per_s": 2814.0, "p50_ms": None, "p99_ms": None},
    }


def test_rates_are_ours_over_theirs_and_latencies_theirs_over_ours() -> None:
    doc = {"peers": serve_bench.parse_peers(RUN_ALL),
           "a": {"per_s_from_start": 2615, "per_s_first_to_last": 2885},
           "b": {"per_s": 2293, "events": 50000},
           "d": {"at_200": {"p50_ms": 9.5, "p99_ms": 18.6, "max_ms": 40.0}}}
    vs = serve_bench.versus_pgqueuer(doc)
    assert vs == {"a_drain_from_start": 1.31, "a_drain_first_to_last": 1.44,
                  "b_publish_and_deliver": 1.15, "d_p50_ms_theirs_over_ours": 0.67,
                  "d_p99_ms_theirs_over_ours": 0.77}
    doc["vs_pgqueuer"] = vs
    assert "vs PgQueuer: (b) publish + deliver" in serve_bench.table(doc)
