"""The test harness itself: the real services start on loopback, work, and stop without leaks."""

from __future__ import annotations

import base64
import io
import os
import socket
import sys
from pathlib import Path

import paramiko
import pytest
from azure.storage.blob import BlobServiceClient

from tests.harness import services
from tests.harness.keys import KeyPair, rsa_key


def _accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((services.LOOPBACK, port)) == 0


def _connect(server: services.SshServer, key: KeyPair) -> paramiko.SSHClient:
    key_type, key_data = server.host_public_key.split()[:2]
    client = paramiko.SSHClient()
    client.get_host_keys().add(
        f"[{services.LOOPBACK}]:{server.port}",
        key_type,
        paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data)),
    )
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        services.LOOPBACK,
        port=server.port,
        username=server.user,
        pkey=paramiko.RSAKey.from_private_key(io.StringIO(key.private_pem)),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def test_azurite_round_trips_a_blob(azurite: services.Azurite) -> None:
    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = client.create_container("harness-round-trip")
    container.upload_blob("hello.txt", b"hello edge")
    assert container.download_blob("hello.txt").readall() == b"hello edge"
    assert azurite.blob_endpoint.startswith("http://127.0.0.1:")


def test_sshd_accepts_the_authorized_key_and_runs_commands_with_the_given_path(
    ssh_server: services.SshServer, ssh_user_key: KeyPair
) -> None:
    services.write_shim(ssh_server.directory / "shims", "docker", 'echo "shim docker $*"\n')
    client = _connect(ssh_server, ssh_user_key)
    try:
        _, stdout, _ = client.exec_command("docker info")
        assert stdout.read().decode().strip() == "shim docker info"
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()


def test_sshd_refuses_an_unknown_key(ssh_server: services.SshServer) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        _connect(ssh_server, rsa_key("stranger"))


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port`, read from the kernel's tables."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words))
    return found


def test_the_services_listen_on_loopback_only(ssh_server: services.SshServer, azurite: services.Azurite) -> None:
    assert listening_addresses(ssh_server.port) == {services.LOOPBACK}
    azurite_port = int(azurite.blob_endpoint.split(":")[2].split("/")[0])
    assert listening_addresses(azurite_port) == {services.LOOPBACK}


def test_sshd_offers_no_password_login(ssh_server: services.SshServer) -> None:
    with paramiko.Transport((services.LOOPBACK, ssh_server.port)) as transport:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as caught:
            transport.auth_password(ssh_server.user, "guess")
    assert "password" not in caught.value.allowed_types


def test_a_restricted_path_leaves_commands_out(start_ssh_server, ssh_user_key: KeyPair, tmp_path: Path) -> None:
    bin_dir = services.restricted_bin(tmp_path / "bin", ["sh", "df", "cat"])
    server = start_ssh_server([ssh_user_key], path=[bin_dir], name="restricted")
    client = _connect(server, ssh_user_key)
    try:
        _, stdout, _ = client.exec_command("command -v docker || echo missing")
        assert stdout.read().decode().strip() == "missing"
    finally:
        client.close()


def test_stopping_a_service_leaves_no_process_and_frees_its_port(tmp_path: Path) -> None:
    server = services.start_sshd(tmp_path / "sshd", [rsa_key("ssh-user")])
    pid, port = server.service.process.pid, server.port
    assert _accepts_connections(port)
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not _accepts_connections(port)
    assert "sshd" not in services.running_services()


def test_azurite_stops_cleanly(tmp_path: Path) -> None:
    emulator = services.start_azurite(tmp_path / "data")
    pid, port = emulator.service.process.pid, emulator.port
    emulator.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not _accepts_connections(port)


def test_skops_is_imported_before_any_pulumi_module() -> None:
    """conftest imports skops.io first: imported after a Pulumi program has run, its start-up walk
    over sys.modules executes every lazily imported pulumi_azure_native module (see conftest)."""
    names = list(sys.modules)
    first_pulumi = min(i for i, name in enumerate(names) if name.split(".")[0] in ("pulumi", "pulumi_azure_native"))
    assert names.index("skops.io") < first_pulumi
