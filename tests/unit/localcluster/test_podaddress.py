"""Each pod gets its own loopback address, and keeps the one it already reports."""

from __future__ import annotations

import ipaddress

import pytest

from localcluster.podaddress import NETWORK, AddressPool


def test_addresses_are_unique_loopback_addresses() -> None:
    pool = AddressPool()
    addresses = [pool.claim(f"uid-{i}") for i in range(500)]
    assert len(set(addresses)) == 500
    for address in addresses:
        parsed = ipaddress.IPv4Address(address)
        assert parsed in NETWORK and parsed.is_loopback
        assert address.split(".")[-1] not in ("0", "255")


def test_a_pod_keeps_its_address() -> None:
    pool = AddressPool()
    first = pool.claim("uid-a")
    assert pool.claim("uid-a") == first
    assert pool.claim("uid-b", preferred="127.1.7.7") == "127.1.7.7"


@pytest.mark.parametrize("preferred", ["10.0.0.5", "127.2.0.1", "not-an-ip"])
def test_addresses_outside_the_pod_network_are_not_reused(preferred: str) -> None:
    assert ipaddress.IPv4Address(AddressPool().claim("uid-a", preferred=preferred)) in NETWORK


def test_a_taken_address_goes_to_its_owner_and_returns_when_released() -> None:
    pool = AddressPool()
    taken = pool.claim("uid-a", preferred="127.1.0.9")
    assert pool.claim("uid-b", preferred=taken) != taken
    pool.release("uid-a")
    assert pool.claim("uid-c", preferred=taken) == taken
