"""Bounded concurrent load on /predict, run as its own process.

``python -m benchmarks.load_generator URL BODY.json --concurrency 64 --seconds 10`` posts the JSON body
from ``concurrency`` threads for ``seconds`` and prints, as JSON, requests/s, p50/p99 latency of the
answered requests and the count of answers by status (``0`` for a connection that failed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("body", help="a JSON file: the request body")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with open(args.body, "rb") as file:
        body = file.read()
    where = urlsplit(args.url)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.perf_counter() + args.seconds

    def worker() -> None:
        connection = None
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                if connection is None:  # keep-alive, as real clients do
                    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
                connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except OSError:
                status = 0
                if connection is not None:
                    connection.close()
                connection = None
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    answered = len(latencies)
    print(
        json.dumps(
            {
                "requests_per_s": answered / elapsed,
                "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
                "p99_ms": 1000 * latencies[min(answered - 1, int(0.99 * answered))] if latencies else float("nan"),
                "ok": answered,
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "non_200": sum(v for k, v in statuses.items() if k != 200),
                # Load shed on purpose (429, or 503 with Retry-After) is not a fault; any other 5xx or a
                # dropped connection is.
                "shed": statuses.get(429, 0) + statuses.get(503, 0),
                "server_errors": sum(v for k, v in statuses.items() if (k >= 500 and k != 503) or k == 0),
            }
        )
    )


if __name__ == "__main__":
    main()
