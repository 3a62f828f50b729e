"""Staging from Azurite against what a user would write instead, one run, one verdict per goal.

    .venv/bin/python bench/stage_blobs.py                         # the issue's sizes (several minutes)
    .venv/bin/python bench/stage_blobs.py --small 400 --big-mib 64 --rounds 2   # a quick look
    .venv/bin/python bench/stage_blobs.py --only in-memory      # the in-memory 5 ms case alone

How it keeps itself honest:
- Every sample is a fresh process doing one variant; it reports the seconds and CPU seconds of its
  work (client creation, listing and downloads, after imports) and its peak RSS, and this process
  also times it from spawn to exit.
- Variants run interleaved, round by round, in a rotating order; medians and minimums are shown
  and the ratios use medians.
- The baselines do the same work as staging: they list the prefix themselves and write every
  blob to a file under the same name. "naive" is a sequential loop on a default client; "bare
  parallel" is a thread pool of `download_blob().readall()` on the client the job builds
  (credentials.service_client: same API version), i.e. what a user would write with the SDK;
  "bare reader" is the same thread pool over staging's own reader (reader.py) with none of
  staging's work (no cache, manifest, hashes or renames): what staging itself costs on top.
- For the large blob, the raw `download_blob(max_concurrency=N).readinto()` runs at every N in
  --raw-concurrency and the best median is the baseline.
- Every output is verified against the SHA-256 of what was uploaded (after the timing), and the
  page cache is synced before each sample, so no sample pays for another's writeback.
- A latency case puts a relay in front of Azurite that holds each request 5 ms (a Hub across a
  datacenter LAN; bench/latency_proxy.py): on bare loopback the benchmark measures CPU, not the waiting that parallel
  downloads remove. Azurite, the proxy and the client share this machine's cores.
- A second latency case runs against bench/blob_server.py, an in-memory blob server that holds
  each response 5 ms and costs almost no CPU per request, so the figure shows the client's own
  concurrency and CPU rather than Azurite's (about a millisecond of CPU per GET here).
"""

from __future__ import annotations

import argparse
import hashlib
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- the child: one variant, timed from the inside too ----------------------------------------------


def child(spec: dict[str, Any]) -> None:
    from azure.storage.blob import BlobServiceClient

    from training.src.edge_train import credentials, staging

    out = Path(spec["out"])
    started, cpu_started = time.perf_counter(), _cpu()
    variant, prefix, workers = spec["variant"], spec["prefix"], spec["workers"]

    def ours_client() -> Any:
        credential = credentials.StorageCredential("bench", connection_string=spec["connection"])
        return credential.service_client(None)

    moved = 0
    if variant == "naive":
        container = BlobServiceClient.from_connection_string(spec["connection"]).get_container_client(spec["container"])
        for blob in container.list_blobs(name_starts_with=prefix):
            _write(out / blob.name, container.download_blob(blob.name).readall())
            moved += blob.size
    elif variant == "bare parallel":
        container = ours_client().get_container_client(spec["container"])
        names = [b.name for b in container.list_blobs(name_starts_with=prefix)]

        def one(name: str) -> int:
            data = container.download_blob(name).readall()
            _write(out / name, data)
            return len(data)

        with ThreadPoolExecutor(workers) as pool:
            moved = sum(pool.map(one, names))
    elif variant == "bare reader":
        from training.src.edge_train.reader import BlobReader

        blobs = BlobReader.for_container(ours_client().get_container_client(spec["container"]), workers)
        listed = list(blobs.list_blobs(prefix))

        def read(blob: Any) -> int:
            data = blobs.get(blob.name, blob.etag)
            _write(out / blob.name, data)
            return len(data)

        with ThreadPoolExecutor(workers) as pool:
            moved = sum(pool.map(read, listed))
    elif variant == "listing":  # the listing staging itself does, so the warm ratio is what staging adds
        from training.src.edge_train.reader import BlobReader

        blobs = BlobReader.for_container(ours_client().get_container_client(spec["container"]), workers)
        sum(1 for _ in blobs.list_blobs(prefix))
    elif variant.startswith("raw readinto"):
        container = ours_client().get_container_client(spec["container"])
        (name,) = [b.name for b in container.list_blobs(name_starts_with=prefix)]
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        with (out / name).open("wb") as handle:
            moved = container.download_blob(name, max_concurrency=spec["raw_concurrency"]).readinto(handle)
    elif variant.startswith("staged"):
        container = ours_client().get_container_client(spec["container"])
        moved = staging.stage_blobs(container, prefix, out, workers, spec["concurrency"]).bytes_downloaded
    else:
        raise SystemExit(f"unknown variant {variant}")
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu_started
    peak_mib = _peak_rss_mib()
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "peak_mib": peak_mib, "bytes": moved}))


def _peak_rss_mib() -> float:
    """VmHWM, this process image's own high-water mark: ru_maxrss would carry over the parent's
    peak from before the exec (here, the parent held the uploaded 512 MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# --- the parent -------------------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """CPU seconds a process (here: Azurite) has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, container: str, server_pid: int) -> None:
        self.args, self.work, self.container, self.server_pid = args, work, container, server_pid
        self.samples: dict[str, list[dict[str, float]]] = {}

    def run(
        self, label: str, spec: dict[str, Any], expected: dict[str, str], keep: bool = False, server_pid: int = 0
    ) -> None:
        out = Path(spec["out"])
        server_pid = server_pid or self.server_pid
        spec = {**spec, "container": self.container, "workers": self.args.workers}
        spec.setdefault("concurrency", self.args.concurrency)
        # Every sample starts with nothing dirty in the page cache: staging's one syncfs would
        # otherwise also wait for the writeback of earlier samples' files and Azurite's uploads.
        os.sync()
        started, server_started = time.perf_counter(), process_cpu(server_pid)
        result = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)], cwd=ROOT, capture_output=True, text=True
        )
        outside = time.perf_counter() - started
        server_cpu = process_cpu(server_pid) - server_started
        if result.returncode != 0:
            raise SystemExit(f"{label} failed:\n{result.stderr}")
        sample = json.loads(result.stdout.strip().splitlines()[-1]) | {"outside": outside, "server_cpu": server_cpu}
        if expected:
            verify(label, out, expected)
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
        self.samples.setdefault(label, []).append(sample)

    def median(self, label: str, key: str = "seconds") -> float:
        return statistics.median(s[key] for s in self.samples[label])


def verify(label: str, out: Path, expected: dict[str, str]) -> None:
    found = {}
    for path in out.rglob("*"):
        relative = path.relative_to(out).as_posix()
        if path.is_file() and not relative.startswith(".edge-staging"):
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(8 * 1024 * 1024), b""):
                    digest.update(chunk)
            found[relative] = digest.hexdigest()
    if found != expected:
        wrong = sorted(set(found.items()) ^ set(expected.items()))[:3]
        raise SystemExit(f"{label}: output does not match what was uploaded, e.g. {wrong}")


def upload_cheap(connection: str, container: str, args: argparse.Namespace) -> dict[str, str]:
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(connection).create_container(container)
    expected: dict[str, str] = {}

    def put(name: str) -> None:
        data = os.urandom(args.small_kib * 1024)
        client.upload_blob(name, data)
        expected[name] = hashlib.sha256(data).hexdigest()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, [f"cheap/{i:05d}.bin" for i in range(args.cheap_small)]))
    return expected


def upload(connection: str, container: str, args: argparse.Namespace) -> dict[str, dict[str, str]]:
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(connection).create_container(container)
    sets: dict[str, dict[str, str]] = {"small/": {}, "latency/": {}, "big/": {}}

    def put(name: str, data: bytes) -> None:
        client.upload_blob(name, data, max_concurrency=4)
        sets[name.split("/")[0] + "/"][name] = hashlib.sha256(data).hexdigest()

    names = [f"small/{i:05d}.bin" for i in range(args.small)]
    names += [f"latency/{i:05d}.bin" for i in range(args.latency_small)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: put(n, os.urandom(args.small_kib * 1024)), names))
    big = os.urandom(args.big_mib * 1024 * 1024)
    put("big/big.bin", big)
    return sets


def in_memory(args: argparse.Namespace) -> str:
    return f"in-memory {args.latency_ms:g} ms"


def rotate(items: list[Any], round_: int) -> list[Any]:
    k = round_ % len(items)
    return items[k:] + items[:k]


def verdict(goal: str, value: float, limit: float, at_least: bool, unit: str = "x") -> str:
    ok = value >= limit if at_least else value <= limit
    return f"{'PASS' if ok else 'FAIL'}  {goal}: {value:.2f}{unit} (goal {'>=' if at_least else '<='} {limit}{unit})"


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    return f"{os.cpu_count()} x {cpu}, Python {platform.python_version()}; load {os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=2000, help="small blobs on bare loopback")
    parser.add_argument("--latency-small", type=int, default=500, help="small blobs behind the latency proxy")
    parser.add_argument("--cheap-small", type=int, default=500, help="small blobs on the in-memory server")
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--big-mib", type=int, default=512)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8, help="our ranges in flight for large blobs")
    parser.add_argument("--raw-concurrency", default="2,4,8,16", help="the raw readinto's N to search")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only",
        choices=["in-memory"],
        help="only the in-memory server's case (no Azurite): quick to repeat on a shared machine",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.only == "in-memory":
        in_memory_only(args)
        return

    from training.emulator import Azurite, connection_string

    work = Path(tempfile.mkdtemp(prefix="stage-bench-"))
    proxy = cheap_server = None
    try:
        with Azurite(work / "azurite") as emulator:
            print(f"machine: {machine()}")
            print(f"uploading {args.small} + {args.latency_small} x {args.small_kib} KiB and {args.big_mib} MiB ...")
            sets = upload(emulator.connection_string, "bench", args)
            proxy = subprocess.Popen(
                [sys.executable, str(ROOT / "bench/latency_proxy.py"), str(emulator.port), str(args.latency_ms)],
                stdout=subprocess.PIPE,
                text=True,
            )
            slow = connection_string(int(proxy.stdout.readline()))  # type: ignore[union-attr]
            cheap_server, cheap = start_in_memory_server(args)
            cheap_sets = upload_cheap(cheap, "bench", args)
            bench = Bench(args, work, "bench", emulator.process.pid)
            loop = emulator.connection_string
            raw_ns = [int(n) for n in args.raw_concurrency.split(",")]

            def small_case(round_: int) -> None:
                expected = sets["small/"]
                base = {"connection": loop, "prefix": "small/"}
                pair = ("staged cold + warm",)
                for variant in rotate(["naive", "bare parallel", "bare reader", "listing", *pair], round_):
                    out = str(work / f"out-{round_}-{variant.replace(' ', '-')}")
                    if variant in pair:
                        bench.run("staged cold", base | {"variant": "staged", "out": out}, expected, keep=True)
                        bench.run("staged warm", base | {"variant": "staged", "out": out}, expected)
                    else:
                        bench.run(
                            variant, base | {"variant": variant, "out": out}, {} if variant == "listing" else expected
                        )

            def latency_case(round_: int) -> None:
                base = {"connection": slow, "prefix": "latency/"}
                for variant in rotate(["naive", "bare parallel", "staged"], round_):
                    out = str(work / f"lat-{round_}-{variant.replace(' ', '-')}")
                    bench.run(f"latency: {variant}", base | {"variant": variant, "out": out}, sets["latency/"])

            def cheap_case(round_: int) -> None:
                base = {"connection": cheap, "prefix": "cheap/"}
                for variant in rotate(["naive", "bare parallel", "bare reader", "staged"], round_):
                    out = str(work / f"cheap-{round_}-{variant.replace(' ', '-')}")
                    spec = base | {"variant": variant, "out": out}
                    bench.run(f"{in_memory(args)}: {variant}", spec, cheap_sets, server_pid=cheap_server.pid)

            def big_case(round_: int) -> None:
                base = {"connection": loop, "prefix": "big/"}
                variants = [f"raw readinto N={n}" for n in raw_ns] + ["staged"]
                for variant in rotate(variants, round_):
                    out = str(work / f"big-{round_}-{variant.replace(' ', '-')}")
                    spec = base | {"variant": variant, "out": out}
                    if variant != "staged":
                        spec["raw_concurrency"] = int(variant.rsplit("=", 1)[1])
                    bench.run(f"big: {variant}", spec, sets["big/"])

            for round_ in range(args.rounds):
                print(f"round {round_ + 1}/{args.rounds} ...", flush=True)
                for case in rotate([small_case, latency_case, cheap_case, big_case], round_):
                    case(round_)

        report(bench, args, raw_ns)
    finally:
        for process in (proxy, cheap_server):
            if process is not None:
                process.terminate()
                process.wait()
        shutil.rmtree(work, ignore_errors=True)


def start_in_memory_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    from training.emulator import connection_string

    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/blob_server.py"), str(args.latency_ms)], stdout=subprocess.PIPE, text=True
    )
    return server, connection_string(int(server.stdout.readline()))  # type: ignore[union-attr]


def in_memory_only(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="stage-bench-"))
    cheap_server, cheap = start_in_memory_server(args)
    try:
        print(f"machine: {machine()}")
        expected = upload_cheap(cheap, "bench", args)
        bench = Bench(args, work, "bench", cheap_server.pid)
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds} ...", flush=True)
            for variant in rotate(["naive", "bare parallel", "bare reader", "staged"], round_):
                out = str(work / f"cheap-{round_}-{variant.replace(' ', '-')}")
                spec = {"connection": cheap, "prefix": "cheap/", "variant": variant, "out": out}
                bench.run(f"{in_memory(args)}: {variant}", spec, expected)
        print_samples(bench, args)
        print("\ngoals:")
        print_in_memory_goals(bench, args)
        print(f"load at the end: {os.getloadavg()[0]:.1f}")
    finally:
        cheap_server.terminate()
        cheap_server.wait()
        shutil.rmtree(work, ignore_errors=True)


def print_samples(bench: Bench, args: argparse.Namespace) -> None:
    print(
        f"\n{args.rounds} rounds, interleaved; work seconds (inside the child), its CPU seconds, Azurite's CPU "
        "seconds meanwhile, wall seconds from outside, peak RSS"
    )
    print(
        f"{'variant':<30}{'median s':>9}{'min s':>8}{'cpu s':>8}{'azurite':>8}{'outside s':>10}"
        f"{'peak MiB':>9}{'bytes':>12}"
    )
    for label, samples in bench.samples.items():
        print(
            f"{label:<30}{bench.median(label):>9.3f}{min(s['seconds'] for s in samples):>8.3f}"
            f"{bench.median(label, 'cpu_s'):>8.2f}{bench.median(label, 'server_cpu'):>8.2f}"
            f"{bench.median(label, 'outside'):>10.2f}"
            f"{max(s['peak_mib'] for s in samples):>9.0f}{int(max(s['bytes'] for s in samples)):>12}"
        )


def print_in_memory_goals(bench: Bench, args: argparse.Namespace) -> None:
    m = bench.median
    print(
        verdict(
            f"small blobs, in-memory server at {args.latency_ms:g} ms: cold vs naive sequential",
            m(f"{in_memory(args)}: naive") / m(f"{in_memory(args)}: staged"),
            8,
            at_least=True,
        )
    )
    print(
        verdict(
            "small blobs, in-memory server: client CPU per blob, ours / a bare pool of our reader",
            m(f"{in_memory(args)}: staged", "cpu_s") / m(f"{in_memory(args)}: bare reader", "cpu_s"),
            1.1,
            at_least=False,
        )
    )


def report(bench: Bench, args: argparse.Namespace, raw_ns: list[int]) -> None:
    print_samples(bench, args)
    m = bench.median
    best_n = min(raw_ns, key=lambda n: m(f"big: raw readinto N={n}"))
    warm_bytes = max(s["bytes"] for s in bench.samples["staged warm"])
    print("\ngoals:")
    print(
        verdict(
            f"small blobs, {args.latency_ms:g} ms latency: cold vs naive sequential",
            m("latency: naive") / m("latency: staged"),
            8,
            at_least=True,
        )
    )
    print_in_memory_goals(bench, args)
    print(verdict("small blobs, bare loopback: cold vs naive", m("naive") / m("staged cold"), 2, at_least=True))
    print(
        verdict(
            "small blobs: CPU per blob, ours / bare parallel download",
            m("staged cold", "cpu_s") / m("bare parallel", "cpu_s"),
            1.0,
            at_least=False,
        )
    )
    print(
        f"info  staging's CPU over a bare thread pool of its own reader: "
        f"{m('staged cold', 'cpu_s') / m('bare reader', 'cpu_s'):.2f}x"
    )
    print(verdict("warm re-stage / listing alone", m("staged warm") / m("listing"), 1.2, at_least=False))
    print(f"{'PASS' if warm_bytes == 0 else 'FAIL'}  warm re-stage moves 0 bytes: {int(warm_bytes)} bytes")
    print(
        verdict(
            f"one {args.big_mib} MiB blob vs the best raw readinto (N={best_n})",
            m(f"big: raw readinto N={best_n}") / m("big: staged"),
            0.95,
            at_least=True,
        )
    )
    peak = max(s["peak_mib"] for s in bench.samples["big: staged"])
    print(verdict(f"peak RSS staging one {args.big_mib} MiB blob", peak, 200, at_least=False, unit=" MiB"))


if __name__ == "__main__":
    main()
