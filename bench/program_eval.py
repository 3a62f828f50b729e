"""Time evaluating the whole Pulumi program under mocks against an empty program, in one run.

Each evaluation runs in a fresh interpreter so that imports and peak memory are its own:

    .venv/bin/python bench/program_eval.py [--runs 5]

Prints wall time (median and min over the runs, imports included) and peak RSS for both, and
how many resources the full program declared.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(kind: str) -> None:
    started = time.perf_counter()
    from tests.conftest import DEV_SECRET_KEYS, dev_stack_config
    from tests.harness import pulumi_mocks

    with tempfile.TemporaryDirectory() as tmp:
        main = pulumi_mocks.MAIN
        if kind == "empty":
            main = Path(tmp) / "__main__.py"
            main.write_text('"""An empty Pulumi program."""\n')
        config = dev_stack_config()
        if kind == "full-vm":  # the virtual-machine edge compute mode; "full" is the default (kubernetes)
            config["edgeComputeMode"] = "virtual-machine"
        recording = pulumi_mocks.run_program(config, secret_keys=DEV_SECRET_KEYS, main=main)
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "peak_mib": peak_kib / 1024, "resources": len(recording.resources)}))


def measure(kind: str, runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, __file__, "--child", kind], check=True, capture_output=True, text=True, cwd=ROOT
        ).stdout
        samples.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "median_s": statistics.median(s["seconds"] for s in samples),
        "min_s": min(s["seconds"] for s in samples),
        "peak_mib": max(s["peak_mib"] for s in samples),
        "resources": samples[0]["resources"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", choices=["full", "full-vm", "empty"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"{'program':<10}{'median s':>10}{'min s':>10}{'peak MiB':>10}{'resources':>11}   ({args.runs} runs)")
    for kind in ("empty", "full", "full-vm"):
        m = measure(kind, args.runs)
        print(f"{kind:<10}{m['median_s']:>10.2f}{m['min_s']:>10.2f}{m['peak_mib']:>10.0f}{m['resources']:>11.0f}")


if __name__ == "__main__":
    main()
