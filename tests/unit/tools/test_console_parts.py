"""The console's sessions, timeline and security rules that need no API server."""

from __future__ import annotations

from datetime import UTC, datetime

from kubernetes import client
from starlette.testclient import TestClient

from collectjob_api.client import Event, Job
from collectjob_tools.console.app import COOKIE, Settings, _local, create_app
from collectjob_tools.console.sessions import IDLE_SECONDS, SessionStore
from collectjob_tools.console.timeline import timeline


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_login_rotates_the_session_and_its_csrf_token():
    store = SessionStore()
    anonymous = store.get_or_create(None)
    user = store.login(anonymous, "alice", (), "token")
    assert user.id != anonymous.id and user.csrf != anonymous.csrf
    assert store.get_or_create(anonymous.id).id != anonymous.id  # the old id is dead
    assert store.get_or_create(user.id) is user
    assert user.check_csrf(user.csrf) and not user.check_csrf("") and not user.check_csrf("x")


def test_idle_sessions_expire():
    clock = Clock()
    store = SessionStore(clock)
    session = store.login(store.get_or_create(None), "alice", (), "token")
    clock.now += IDLE_SECONDS + 1
    assert store.get_or_create(session.id).id != session.id


def test_one_time_codes_work_once_and_expire():
    clock = Clock()
    store = SessionStore(clock)
    code = store.one_time_code("t", ttl=60)
    assert store.redeem(code) == "t" and store.redeem(code) is None
    late = store.one_time_code("t", ttl=60)
    clock.now += 61
    assert store.redeem(late) is None


def test_timeline_follows_the_events():
    job = Job(
        name="a",
        namespace="n",
        created=datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC),
        phase="Running",
    )

    def at(second: int, reason: str) -> Event:
        return Event(
            type="Normal", reason=reason, message="", time=job.created.replace(second=second)
        )

    events = [at(10, "Started"), at(30, "Suspended"), at(50, "Resumed"), at(55, "WorkerRestarted")]
    segments = timeline(job, events, job.created.replace(second=59))
    assert [s.phase for s in segments] == ["Pending", "Running", "Suspended", "Running"]
    assert [round(s.seconds) for s in segments] == [10, 20, 20, 9]
    assert segments[0].x == 0 and round(sum(s.width for s in segments)) == 1000


def test_redirects_after_an_action_stay_inside_the_console():
    assert _local("/jobs/a/b", "/jobs") == "/jobs/a/b"
    for hostile in ("https://evil.example/", "//evil.example/jobs", "/jobs\\@evil", "/login"):
        assert _local(hostile, "/jobs") == "/jobs"


def test_strict_headers_login_required_and_csrf_checked():
    # An API client for an address nothing listens on: these paths never reach it.
    conf = client.Configuration()
    conf.host = "https://127.0.0.1:9"
    app = create_app(Settings(api=client.ApiClient(conf), secure_cookies=True))
    with TestClient(app, base_url="https://testserver") as browser:
        page = browser.get("/login")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
        assert browser.get("/jobs", follow_redirects=False).headers["location"] == "/login"
        refused = browser.post("/login", data={"csrf": "forged", "token": "t"})
        assert refused.status_code == 403 and "CSRF" in refused.text
        assert browser.cookies.get(COOKIE)


def test_events_in_the_same_second_keep_their_order():
    job = Job(name="a", namespace="n", created=datetime(2026, 1, 1, tzinfo=UTC), phase="Running")
    second = job.created.replace(second=5)
    events = [
        Event(type="Normal", reason="Resumed", message="", time=second, sequence=30),
        Event(type="Normal", reason="Suspended", message="", time=second, sequence=20),
        Event(type="Normal", reason="Started", message="", time=job.created, sequence=10),
    ]
    phases = [s.phase for s in timeline(job, events, job.created.replace(second=9))]
    assert phases == ["Pending", "Running", "Suspended", "Running"]
