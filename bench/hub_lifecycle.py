"""Time the edge lifecycle through the Hub ARM provider against the local Hub stand-in, and count
what it asks of the Hub:

    .venv/bin/python bench/hub_lifecycle.py [--runs 5]

One run: create the program's seven Hub resources, refresh, a tag update, a VM image replace,
delete. Prints wall time (median and min; the program's evaluations under mocks are done before
the clock starts), the requests by kind, and the Retry-After waits the Hub asked for (recorded,
not slept). Sign-in happens once per process, so runs after the first reuse the token.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs

    from providers.hub_arm_resource import HubArmResourceProvider
    from tests.conftest import DEV_SECRET_KEYS, dev_stack_config
    from tests.harness import pulumi_mocks
    from tests.harness.hub_arm import Engine, serve_hub_arm

    def program(**overrides: object) -> pulumi_mocks.Recording:
        config = dev_stack_config() | {"hubIdentityProvider": "adfs", **overrides}
        config.pop("hubTenantId", None)
        return pulumi_mocks.run_program(config, secret_keys=DEV_SECRET_KEYS)

    recordings = [
        program(),
        program(tags=["owner=data-team"]),
        program(tags=["owner=data-team"], hubImageVersion="22.04.202411010"),
    ]
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, serve_hub_arm(Path(tmp)) as hub:
        os.environ["HUB_ARM_CLIENT_ID"], os.environ["HUB_ARM_CLIENT_SECRET"] = hub.client_id, hub.client_secret
        transport = hub.transport()
        provider = HubArmResourceProvider(transport=transport)
        for _ in range(runs):
            hub.requests.clear()
            transport.slept.clear()
            engine = Engine(provider, hub)
            declared = [engine.declared(r) for r in recordings]
            started = time.perf_counter()
            engine.up(declared[0], hub.url)
            engine.refresh()
            engine.up(declared[1], hub.url)
            engine.up(declared[2], hub.url)
            engine.destroy()
            times.append(time.perf_counter() - started)
        kinds: Counter[str] = Counter()
        for request in hub.requests:
            if request.path.startswith(("/metadata", "/adfs")):
                kinds[f"sign-in {request.method} {request.path}"] += 1
            elif "operations/" in request.path:
                kinds["operation status GET"] += 1
            else:
                kinds[f"resource {request.method}"] += 1
        print(f"lifecycle: median {statistics.median(times):.2f}s, min {min(times):.2f}s over {runs} runs")
        print(f"requests in the last run: {sum(kinds.values())}")
        for kind, count in sorted(kinds.items()):
            print(f"  {kind}: {count}")
        print(f"Retry-After waits asked for: {len(transport.slept)}, {sum(transport.slept):.0f}s in all")
        print(f"requests outside the profile: {len(hub.outside_profile())}")


if __name__ == "__main__":
    main()
