"""How far past its deadline the attach step's waits run, against listeners on 127.0.0.1.

    .venv/bin/python bench/attach_deadlines.py                  # deadlines 0.5, 1, 2 and 4 s
    .venv/bin/python bench/attach_deadlines.py --deadlines 1 --repeat 5

For each deadline: an SSH connect to a port that accepts TCP and never speaks, and a compute GET
to an HTTPS port that completes TLS and never answers. Prints the worst elapsed time of --repeat
runs and the overshoot past the deadline (the tests only bound it with pytest-timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

from azure.core.pipeline.transport import RequestsTransport

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from clients import ssh
from clients.cloud import Cloud
from clients.deadline import Deadline
from components.azureml_computes import ComputeApiError, ComputeClient, ComputeRef
from components.ssh_preflight import load_private_key
from tests.harness.arm_server import StaticCredential, _certificate
from tests.harness.keys import rsa_key

REF = ComputeRef("11111111-1111-1111-1111-111111111111", "rg", "ws", "edge-vm")


def silent_listener(context: ssl.SSLContext | None) -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                held.append(context.wrap_socket(conn, server_side=True) if context else conn)
            except OSError:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, int(server.getsockname()[1])


def worst(action: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        with contextlib.suppress(ssh.SshError, ComputeApiError):
            action()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadlines", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = _certificate(Path(tmp))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        ssh_server, ssh_port = silent_listener(None)
        https_server, https_port = silent_listener(context)
        user_key = load_private_key(rsa_key("bench").private_pem)
        cloud = Cloud(f"https://127.0.0.1:{https_port}/", "https://login.microsoftonline.com/", "https://x/")
        print(f"{'deadline':>9} {'ssh worst':>10} {'over':>6} {'https worst':>12} {'over':>6}")
        for seconds in args.deadlines:
            ssh_time = worst(
                lambda s=seconds: ssh.connect("127.0.0.1", ssh_port, "u", user_key, None, Deadline(s), first_delay=0.1),
                args.repeat,
            )

            def get(s: float = seconds) -> None:
                transport = RequestsTransport(connection_verify=str(cert))
                with ComputeClient(StaticCredential(), cloud, transport=transport) as client:
                    client.get(REF, Deadline(s))

            https_time = worst(get, args.repeat)
            print(
                f"{seconds:>8.1f}s {ssh_time:>9.2f}s {ssh_time - seconds:>5.2f}s "
                f"{https_time:>11.2f}s {https_time - seconds:>5.2f}s"
            )
        ssh_server.close()
        https_server.close()


if __name__ == "__main__":
    main()
