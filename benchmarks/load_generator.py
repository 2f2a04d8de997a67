"""Bounded concurrent load on /predict, run as its own process: python -m benchmarks.load_generator URL."""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    body = json.dumps({"images": [[[(r * 8 + c) % 16 * 16 for c in range(8)] for r in range(8)]]}).encode()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.perf_counter() + args.seconds

    def worker() -> None:
        while time.perf_counter() < stop_at:
            request = urllib.request.Request(
                f"{args.url}/predict", data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
                with lock:
                    latencies.append(time.perf_counter() - began)
            except OSError as error:
                kind = str(getattr(error, "code", None) or type(error).__name__)
                with lock:
                    errors[kind] = errors.get(kind, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    print(
        json.dumps(
            {
                "requests_per_s": len(latencies) / elapsed,
                "p50_ms": 1000 * statistics.median(latencies),
                "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
                "requests": len(latencies),
                "errors": sum(errors.values()),
                "error_kinds": errors,
            }
        )
    )


if __name__ == "__main__":
    main()
