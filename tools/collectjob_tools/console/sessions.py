"""Server-side sessions: the browser holds only a random id; the user's token stays here.

Each session carries its own CSRF token, required on every POST. Login rotates the session
id (no fixation). Sessions expire after an idle and an absolute limit. A one-time login
code (for `make demo`) is consumed by its first use.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

IDLE_SECONDS = 30 * 60
ABSOLUTE_SECONDS = 8 * 3600
MAX_SESSIONS = 10_000
"""Bounded: an anonymous visitor makes a session too, so the store must not grow without end."""


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    seen: float
    user: str = ""
    groups: tuple[str, ...] = ()
    token: str = field(default="", repr=False)
    flash: list[tuple[str, str]] = field(default_factory=list)
    """(kind, text) messages shown once on the next page."""

    @property
    def authenticated(self) -> bool:
        return bool(self.token)

    def check_csrf(self, presented: str) -> bool:
        return bool(presented) and hmac.compare_digest(presented, self.csrf)


class SessionStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._once: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _new(self) -> Session:
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        self._sessions[session.id] = session
        return session

    def _expire(self) -> None:
        now = self._clock()
        for sid, s in list(self._sessions.items()):
            if now - s.seen > IDLE_SECONDS or now - s.created > ABSOLUTE_SECONDS:
                del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:  # drop the oldest anonymous first
            oldest = min(self._sessions.values(), key=lambda s: (s.authenticated, s.seen))
            del self._sessions[oldest.id]

    def get_or_create(self, sid: str | None) -> Session:
        with self._lock:
            self._expire()
            session = self._sessions.get(sid or "")
            if session is None:
                return self._new()
            session.seen = self._clock()
            return session

    def login(self, old: Session, user: str, groups: tuple[str, ...], token: str) -> Session:
        """A fresh id and CSRF token for the authenticated session; the old id dies."""
        with self._lock:
            self._sessions.pop(old.id, None)
            session = self._new()
            session.user, session.groups, session.token = user, groups, token
            return session

    def logout(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)

    def one_time_code(self, token: str, ttl: float = 3600) -> str:
        """A code that logs in as `token` once, within `ttl` seconds."""
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._once[code] = (token, self._clock() + ttl)
        return code

    def redeem(self, code: str) -> str | None:
        with self._lock:
            token, until = self._once.pop(code, ("", 0.0))
        return token if token and self._clock() <= until else None
