"""The edge VM on an operator's network: the Hub's CA and an enterprise proxy, at first boot.

Rendered into the first-boot script as shell functions (`configure_edge_network`, called once
before anything is downloaded), so that apt, Docker, K3s/containerd, Helm and the Arc agents
all trust the operator's CAs and go out through the proxy:
- CAs: each certificate into /usr/local/share/ca-certificates/edge-training/ and
  `update-ca-certificates` (Ubuntu's system store, which curl, apt, Docker and K3s's containerd
  read: Go's crypto/x509 loads /etc/ssl/certs/ca-certificates.crt on Linux); the Hub's CA also
  as /etc/edge-training/hub-ca.pem, which jobs get mounted (EDGE_HUB_CA_FILE, edge_train/trust.py).
- Proxy: one root-only file of HTTP(S)_PROXY/NO_PROXY, read into the script's environment (so
  curl, Helm and K3s's installer see it; the installer copies those variables into the K3s unit's
  environment file, docs.k3s.io "Configuring an HTTP proxy"), apt's `Acquire::http(s)::Proxy`
  (apt.conf(5)), and a systemd drop-in for Docker (Docker docs, "Configure the daemon to use a
  proxy"). The Arc agents get the chart values `az connectedk8s connect --proxy-https/--proxy-http/
  --proxy-skip-range/--proxy-cert` set (azure-cli-extensions src/connectedk8s, `_utils.py`
  helm_install_release: global.httpsProxy, global.httpProxy, global.noProxy, global.isProxyEnabled,
  and global.proxyCert from --set-file).

Proxy URLs may carry credentials: they are only ever in heredocs of write_private functions (root-only
files), never in an argument or a log line.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

HEREDOC_END = "EDGE_TRAINING_EOF"
K3S_CLUSTER_CIDR = "10.42.0.0/16"
K3S_SERVICE_CIDR = "10.43.0.0/16"
"""K3s's defaults (docs.k3s.io, server flags --cluster-cidr and --service-cidr)."""
ALWAYS_DIRECT: tuple[str, ...] = (
    "localhost",
    "127.0.0.1",
    "::1",
    "169.254.169.254",  # the Hub's instance metadata (and Azure's)
    K3S_CLUSTER_CIDR,
    K3S_SERVICE_CIDR,
    ".svc",
    ".cluster.local",
    "kubernetes.default.svc",
)
"""What never goes through the proxy, whatever edgeNoProxy says: the node, the cluster's pods and
services, and what the Arc agents reach inside the cluster (connectedk8s adds the same kinds of
entries for --proxy-skip-range)."""
HUB_CA_ON_VM = "/etc/edge-training/hub-ca.pem"
HUB_CA_FOR_JOBS = "/var/lib/edge-training/credential/hub-ca.pem"
"""On K3s nodes: the credential volume's host directory, mounted into jobs at /etc/edge-training
(edge/cluster_manifests.py), so jobs find the CA at HUB_CA_ON_VM in both compute modes."""
CA_DIRECTORY_ON_VM = "/usr/local/share/ca-certificates/edge-training"
PROXY_ENV_ON_VM = "/etc/edge-training/proxy.env"
APT_PROXY_CONF = "/etc/apt/apt.conf.d/95edge-training-proxy"
DOCKER_PROXY_DROP_IN = "/etc/systemd/system/docker.service.d/edge-training-proxy.conf"
_NO_PROXY_ENTRY = re.compile(r"\.?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\*")
_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)


class EdgeNetworkError(ValueError):
    """A proxy setting the VM would misread; the message never repeats a proxy's credentials."""


def proxy_problem(url: str) -> str | None:
    """Why `url` is not a proxy URL curl, apt, Docker and Helm all read alike (http://host:port)."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname}:{parts.port}" if "@" in parts.netloc else repr(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{shown} is not an http:// or https:// URL"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{shown} must be the proxy alone, without a path"
    try:
        parts.port  # noqa: B018 (parsing is the check)
    except ValueError:
        return f"{shown} has a port that is not a number"
    if any(c.isspace() or c in "'\"\\`$" for c in url):
        return f"{shown} holds a character shells and config files read differently"
    return None


def no_proxy_problem(entry: str) -> str | None:
    try:
        ipaddress.ip_network(entry, strict=False)
        return None
    except ValueError:
        pass
    return None if _NO_PROXY_ENTRY.fullmatch(entry) else f"{entry!r} is neither a host, a .domain nor a CIDR"


@dataclass(frozen=True)
class EdgeNetwork:
    """The operator's network as the VM must know it. Empty: public roots, no proxy."""

    hub_ca_pem: str = ""
    http_proxy: str = field(default="", repr=False)
    https_proxy: str = field(default="", repr=False)
    no_proxy: tuple[str, ...] = ()
    """Entries to reach directly besides ALWAYS_DIRECT (the Hub's domain, the VNet, edgeNoProxy)."""
    proxy_ca_pem: str = ""

    @property
    def proxied(self) -> bool:
        return bool(self.http_proxy or self.https_proxy)

    @property
    def direct(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*ALWAYS_DIRECT, *self.no_proxy]))

    def check(self) -> None:
        for name, url in (("http_proxy", self.http_proxy), ("https_proxy", self.https_proxy)):
            if url and (reason := proxy_problem(url)) is not None:
                raise EdgeNetworkError(f"{name}: {reason}")
        for entry in self.no_proxy:
            if (reason := no_proxy_problem(entry)) is not None:
                raise EdgeNetworkError(f"no_proxy: {reason}")
        if self.proxy_ca_pem and not self.proxied:
            raise EdgeNetworkError("proxy_ca_pem is set without a proxy")


def arc_proxy_values(network: EdgeNetwork) -> dict[str, Any]:
    """The `global` values connectedk8s sets for a proxy (empty without one)."""
    if not network.proxied:
        return {}
    values: dict[str, Any] = {"isProxyEnabled": True, "noProxy": ",".join(network.direct)}
    if network.https_proxy:
        values["httpsProxy"] = network.https_proxy
    if network.http_proxy:
        values["httpProxy"] = network.http_proxy
    if network.proxy_ca_pem:
        values["proxyCert"] = network.proxy_ca_pem.strip() + "\n"
    return values


def _heredoc(content: str) -> str:
    if any(line == HEREDOC_END for line in content.splitlines()):
        raise EdgeNetworkError(f"a value contains the line {HEREDOC_END}")
    return content if content.endswith("\n") else content + "\n"


def _certificates(pem: str) -> list[str]:
    return [m.group(0) for m in _CERTIFICATE.finditer(pem)]


def shell_functions(network: EdgeNetwork) -> str:
    """`configure_edge_network` and its helpers, for the first-boot script (a no-op when empty)."""
    network.check()
    lines = [
        "# --- the operator's network (edge/real_edge.py) ---",
        "write_public() {  # path: stdin to a 0644 file, unless it already holds exactly that",
        "  local content",
        "  IFS= read -r -d '' content || true",
        '  if [ -f "$1" ] && [ "$(< "$1")" = "${content%$\'\\n\'}" ]; then return 1; fi',
        '  mkdir -p "$(dirname "$1")"',
        '  printf \'%s\' "$content" > "$1.new"',
        '  chmod 0644 "$1.new"',
        '  mv -f "$1.new" "$1"',
        "}",
        "",
        "trust_edge_cas() {",
        "  local changed=false",
    ]
    cas = [("hub-ca", c) for c in _certificates(network.hub_ca_pem)]
    cas += [("proxy-ca", c) for c in _certificates(network.proxy_ca_pem)]
    for number, (kind, certificate) in enumerate(cas, start=1):
        path = f'"$ROOT{CA_DIRECTORY_ON_VM}/{kind}-{number}.crt"'
        lines += [
            f"  if write_public {path} <<'{HEREDOC_END}'",
            _heredoc(certificate) + HEREDOC_END,
            "  then changed=true; fi",
        ]
    if network.hub_ca_pem:
        bundle = _heredoc("\n".join(_certificates(network.hub_ca_pem)))
        lines += [f"  write_public \"$ROOT{HUB_CA_ON_VM}\" <<'{HEREDOC_END}' || true", bundle + HEREDOC_END]
        lines += [
            '  if [ "$K3S_ROLE" != none ]; then',
            f"    write_public \"$ROOT{HUB_CA_FOR_JOBS}\" <<'{HEREDOC_END}' || true",
            bundle + HEREDOC_END,
            "  fi",
        ]
    lines += [
        '  if [ "$changed" = true ]; then',
        '    log "trusting the operator\'s CA certificates"',
        "    update-ca-certificates",
        "  fi",
        "}",
        "",
        "use_edge_proxy() {",
    ]
    if network.proxied:
        variables = [
            (name, value)
            for name, value in (
                ("HTTP_PROXY", network.http_proxy),
                ("HTTPS_PROXY", network.https_proxy),
                ("NO_PROXY", ",".join(network.direct)),
            )
            if value
        ]
        env = "".join(f"{name}={value}\n{name.lower()}={value}\n" for name, value in variables)
        apt = "".join(
            f'Acquire::{scheme}::Proxy "{url}";\n'
            for scheme, url in (("http", network.http_proxy), ("https", network.https_proxy))
            if url
        )
        docker = "[Service]\n" + "".join(f'Environment="{name}={value}"\n' for name, value in variables)
        lines += [
            "  local docker_changed=false",
            f"  write_private \"$ROOT{PROXY_ENV_ON_VM}\" <<'{HEREDOC_END}' || true",
            _heredoc(env) + HEREDOC_END,
            "  # Read in this shell: curl, Helm and K3s's installer inherit it; nothing is on a command line.",
            "  set -a",
            "  # shellcheck source=/dev/null",
            f'  . "$ROOT{PROXY_ENV_ON_VM}"',
            "  set +a",
            f"  write_private \"$ROOT{APT_PROXY_CONF}\" <<'{HEREDOC_END}' || true",
            _heredoc(apt) + HEREDOC_END,
            f"  if write_private \"$ROOT{DOCKER_PROXY_DROP_IN}\" <<'{HEREDOC_END}'",
            _heredoc(docker) + HEREDOC_END,
            "  then docker_changed=true; fi",
            '  if [ "$docker_changed" = true ]; then',
            "    systemctl daemon-reload",
            "    if systemctl is-active --quiet docker; then systemctl restart docker; fi",
            "  fi",
            '  log "outbound through the configured proxy; direct: $NO_PROXY"',
        ]
    else:
        lines += ["  :"]
    lines += ["}", "", "configure_edge_network() {", "  trust_edge_cas", "  use_edge_proxy", "}", ""]
    return "\n".join(lines) + "\n"
