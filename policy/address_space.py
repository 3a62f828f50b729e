"""Whether a set of NSG sources reaches every address: one judgement for the program and the pack.

The program (components/config.py) and the CrossGuard pack (policy/baseline.py) both import this
module, so that `0::/0`, `0.0.0.0/0.0.0.0` or `0.0.0.0/1` + `128.0.0.0/1` mean "everywhere" to
both. It uses the standard library only: the pack runs without the program's modules.

Sources are normalised before they are judged (ipaddress parses netmask and long forms, an
IPv4-mapped IPv6 range counts as the IPv4 range it maps) and "everywhere" is judged by coverage:
the union of all sources covers all of IPv4 or all of IPv6, whichever way it is split.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# NSG sources that mean "any address" without being a CIDR: the wildcard and the service tags
# "Internet" and "Any" (Microsoft Learn, "Network security groups: service tags"). Bare 0.0.0.0
# and :: are read as "any" as well, as several tools write it.
EVERYWHERE_WORDS = frozenset({"*", "any", "internet"})
_ANY_ADDRESS = frozenset({"0.0.0.0", "::"})  # noqa: S104 (what to refuse)
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_ALL = {4: ipaddress.IPv4Network("0.0.0.0/0"), 6: ipaddress.IPv6Network("::/0")}


@dataclass(frozen=True)
class Source:
    """One NSG source, normalised: a word meaning everywhere, or a network."""

    text: str
    """The canonical spelling: `*`, `Internet`, or the network as ipaddress prints it."""
    network: Network | None

    @property
    def is_everywhere_word(self) -> bool:
        return self.network is None


def parse_source(text: str, *, strict: bool = True) -> Source:
    """Normalise one source. `strict` refuses host bits set (10.0.0.1/24); raises ValueError."""
    cleaned = str(text).strip()
    lowered = cleaned.lower()
    if lowered in EVERYWHERE_WORDS:
        return Source("Internet" if lowered == "internet" else "*", None)
    if lowered in _ANY_ADDRESS:
        return Source(cleaned, ipaddress.ip_network(f"{cleaned}/0"))
    network = ipaddress.ip_network(cleaned, strict=strict)
    return Source(str(network), network)


def _as_ipv4_if_mapped(network: Network) -> Network:
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        # Inside ::ffff:0:0/96 the low 32 bits are the IPv4 address.
        first = ipaddress.IPv4Address(int(network.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network(f"{first}/{network.prefixlen - 96}")
    return network


def everywhere_reason(sources: Iterable[str | Source]) -> str | None:
    """Why these sources, taken together, admit every address; None when they do not.

    Sources that do not parse are skipped (whoever reads them reports them); host bits are
    ignored here, since a range is judged by what it admits.
    """
    networks: dict[int, list[Network]] = {4: [], 6: []}
    written: dict[int, list[str]] = {4: [], 6: []}
    for item in sources:
        text = item.text if isinstance(item, Source) else str(item).strip()
        try:
            source = item if isinstance(item, Source) else parse_source(item, strict=False)
        except ValueError:
            continue
        if source.network is None:
            return f"{text!r} means every address"
        network = _as_ipv4_if_mapped(source.network)
        networks[network.version].append(network)
        written[network.version].append(repr(text))
    for version, found in networks.items():
        if list(ipaddress.collapse_addresses(found)) == [_ALL[version]]:  # type: ignore[arg-type]
            verb = "covers" if len(found) == 1 else "together cover"
            return f"{' + '.join(written[version])} {verb} all of IPv{version}"
    return None
