"""Pod IPs on the local node: a unique loopback address per pod, in 127.1.0.0/16.

Linux routes all of 127.0.0.0/8 to the loopback interface, so each address is reachable on
this machine without any setup; a process may bind to its pod's address (given as
`status.podIP` through the downward API) to get ports of its own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading

NETWORK = ipaddress.IPv4Network("127.1.0.0/16")
# .0 and .255 of each /24 are left out: valid on lo, but confusing to read as pod IPs.
_SLOTS = 256 * 254


def _address(slot: int) -> str:
    third, fourth = divmod(slot % _SLOTS, 254)
    return str(NETWORK.network_address + third * 256 + fourth + 1)


class AddressPool:
    """Hands out pod IPs; a pod keeps the one it already reports if that is still free."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}

    def claim(self, uid: str, preferred: str | None = None) -> str:
        with self._lock:
            for address, owner in self._owners.items():
                if owner == uid:
                    return address
            if preferred and self._usable(preferred):
                self._owners[preferred] = uid
                return preferred
            start = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "big")
            for offset in range(_SLOTS):
                address = _address(start + offset)
                if address not in self._owners:
                    self._owners[address] = uid
                    return address
        raise RuntimeError(f"no free pod address left in {NETWORK}")

    def release(self, uid: str) -> None:
        with self._lock:
            for address in [a for a, owner in self._owners.items() if owner == uid]:
                del self._owners[address]

    def _usable(self, address: str) -> bool:
        try:
            parsed = ipaddress.IPv4Address(address)
        except ValueError:
            return False
        return parsed in NETWORK and address not in self._owners
