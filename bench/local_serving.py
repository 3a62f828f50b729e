"""Time the model server that `serve --local` runs (the image's command) on a model trained here.

    .venv/bin/python bench/local_serving.py [--requests 200] [--rows 1,100,1000]

Trains a small model with `run --local` (its own Azurite), starts the server on 127.0.0.1, and
prints: seconds from start to the first 200 on GET / (the readiness the HEALTHCHECK and the
Kubernetes probes wait for), and scoring latency (median, p95) per request size, sequential
requests on one connection each, as a client would send them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rows", default="1,100,1000")
    args = parser.parse_args()
    from training import cli, local_server, mlflow_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        assert cli.main(["run", "--local", "--workdir", str(work / "demo"), "--rows", "2000"]) == 0
        model = work / "demo" / "outputs" / "churn" / "model"
        python = local_server.serving_virtualenv(ROOT / ".edge-training", model_requirements=model / "requirements.txt")
        started = time.perf_counter()
        with local_server.running(model, python) as server:
            ready = time.perf_counter() - started
            width = mlflow_model.read(model).input_columns or 0
            results = {"seconds_to_ready": round(ready, 3)}
            for rows in (int(r) for r in args.rows.split(",")):
                body = json.dumps({"inputs": [[0.1 * (i % 7)] * width for i in range(rows)]}).encode()
                timings = []
                for _ in range(args.requests):
                    request = urllib.request.Request(  # noqa: S310 (our loopback server)
                        f"{server.url}/score", body, {"Content-Type": "application/json"}, method="POST"
                    )
                    began = time.perf_counter()
                    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (our loopback server)
                        response.read()
                    timings.append(time.perf_counter() - began)
                timings.sort()
                results[f"rows_{rows}"] = {
                    "median_ms": round(statistics.median(timings) * 1000, 2),
                    "p95_ms": round(timings[int(len(timings) * 0.95) - 1] * 1000, 2),
                }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
