"""Startup costs, timed from outside the process: the Pulumi program under mocks against an empty
program, `python -m training --help`, and a warm `run --local` demo.

    .venv/bin/python bench/program_eval.py [--rounds 5] [--skip-demo]

Every sample is a fresh interpreter timed by this process's clock from spawn to exit, so imports
and interpreter shutdown count. Variants run interleaved, round by round (the machine is shared
and noisy: a slow minute hits every variant alike). The "empty" baseline does what the full
evaluation does minus our program: import Pulumi and the mocks harness, run a program that
declares nothing; it loads no pytest and makes no key. The config (with its SSH key) and what
the ClusterSecrets provider would create (an RSA-4096 key, made by the provider host on create,
never while the program evaluates) are made once here and handed to both through files. A third
child, the empty program after importing the azure-native packages the full program loads, shows
how much of the goal the SDK's own import takes. Prints medians, minimums, the children's CPU time
(user + system) and one verdict per goal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

CHILD = """
import gc, importlib, json, sys, types
from pathlib import Path
from tests.harness import pulumi_mocks

kind, config_file, empty_main, secrets_file = sys.argv[1:5]
config = json.loads(Path(config_file).read_text())
pulumi_mocks.preset_cluster_secrets(json.loads(Path(secrets_file).read_text()))
sdk_file = Path(config_file + ".sdk-packages")
if kind == "empty+sdk":
    for name in json.loads(sdk_file.read_text()):
        getattr(importlib.import_module(name), "__all__", None)  # any attribute loads a lazy package
main = pulumi_mocks.MAIN if kind == "full" else Path(empty_main)
recording = pulumi_mocks.run_program(config, secret_keys=("sshPrivateKey",), main=main)
Path(config_file + "." + kind + ".count").write_text(str(len(recording.resources)))
if kind == "full":  # which azure-native packages the program loaded (the others stay lazy stubs)
    loaded = [n for n, m in sys.modules.items() if n.count(".") == 1 and n.startswith("pulumi_azure_native.")
              and type(m) is types.ModuleType and not n.endswith(("._utilities", "._enums", "._inputs", ".outputs"))]
    sdk_file.write_text(json.dumps(sorted(loaded)))
if kind == "empty+sdk":
    gc.freeze()  # as __main__.py ends: shutdown then skips the SDK's objects, as it does for the program
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one child, from spawn to exit."""
    cpu, started = _children_cpu(), time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started, _children_cpu() - cpu


Sample = tuple[float, float]


def interleaved(variants: dict[str, Callable[[], Sample]], rounds: int) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:  # rotate the order
            samples[name].append(variants[name]())
    return samples


def verdict(goal: str, ratio: float, limit: float, unit: str = "x", at_most: bool = True) -> str:
    ok = ratio <= limit if at_most else ratio >= limit
    sign = "<=" if at_most else ">="
    return f"{'PASS' if ok else 'FAIL'}  {goal}: {ratio:.2f}{unit} (goal {sign} {limit}{unit})"


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} x {cpu}, Python {platform.python_version()}, {platform.system()}; load {load:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-demo", action="store_true", help="leave out the demo (it trains a model)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from providers.cluster_secrets import KEY_BITS, ClusterSecretsProvider
    from tests.conftest import dev_stack_config

    work = Path(tempfile.mkdtemp(prefix="program-bench-"))
    try:
        config_file = work / "config.json"
        config_file.write_text(json.dumps(dev_stack_config()))
        secrets_file = work / "cluster-secrets.json"
        secrets_file.write_text(
            json.dumps(ClusterSecretsProvider().create({"keyBits": KEY_BITS, "onboardingKeyRotation": 0}).outs)
        )
        empty_main = work / "__main__.py"
        empty_main.write_text('"""An empty Pulumi program."""\n')

        def program(kind: str) -> Callable[[], Sample]:
            return lambda: timed([PYTHON, "-c", CHILD, kind, str(config_file), str(empty_main), str(secrets_file)])

        help_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        program("full")()  # not counted: warms the caches and lists the SDK packages the program loads
        sdk_packages = json.loads((work / "config.json.sdk-packages").read_text())
        variants = {
            "empty program": program("empty"),
            "full program": program("full"),
            "empty program + the program's SDK": program("empty+sdk"),
            "python -m training --help": lambda: timed([PYTHON, "-m", "training", "--help"], help_env),
        }
        demo = work / "demo"
        if not args.skip_demo:
            timed([PYTHON, "-m", "training", "run", "--local", "--workdir", str(demo)])  # cold, not counted
            variants["warm demo (run --local, 2nd run)"] = lambda: timed(
                [PYTHON, "-m", "training", "run", "--local", "--workdir", str(demo)]
            )

        print(f"machine: {machine()}")
        print(f"{args.rounds} rounds, variants interleaved; wall seconds from spawn to exit\n")
        samples = interleaved(variants, args.rounds)
        print(f"{'variant':<36}{'median s':>10}{'min s':>9}{'median CPU s':>14}")
        for name, values in samples.items():
            wall, cpu = [w for w, _ in values], [c for _, c in values]
            print(f"{name:<36}{statistics.median(wall):>10.3f}{min(wall):>9.3f}{statistics.median(cpu):>14.3f}")
        counts = {kind: (config_file.parent / f"config.json.{kind}.count").read_text() for kind in ("empty", "full")}
        print(f"resources declared: empty {counts['empty']}, full {counts['full']}")

        med = {name: statistics.median(w for w, _ in values) for name, values in samples.items()}
        cpu = {name: statistics.median(c for _, c in values) for name, values in samples.items()}
        print("\ngoals:")
        print(verdict("program under mocks / empty program", med["full program"] / med["empty program"], 3.0))
        print(f"info  in CPU time: {cpu['full program'] / cpu['empty program']:.2f}x the empty program's")
        sdk = "empty program + the program's SDK"
        print(
            f"info  importing the {len(sdk_packages)} azure-native packages the program uses "
            f"({', '.join(p.rsplit('.', 1)[1] for p in sdk_packages)}) alone: "
            f"{med[sdk] / med['empty program']:.2f}x the empty program, {cpu[sdk] / cpu['empty program']:.2f}x in CPU"
        )
        print(verdict("python -m training --help", med["python -m training --help"], 0.3, unit=" s"))
        if not args.skip_demo:
            print(verdict("warm demo", med["warm demo (run --local, 2nd run)"], 2.0, unit=" s"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
