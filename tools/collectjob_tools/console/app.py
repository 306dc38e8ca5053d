"""The console's pages and actions. Every handler is thin: load the session, make the API
calls with the user's own token (in a thread: the Kubernetes client is synchronous), render.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import jinja2
from kubernetes import client
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collectjob_api.client import Action, CollectJobClient, CollectJobError, Job
from collectjob_tools import render
from collectjob_tools.console import auth
from collectjob_tools.console.sessions import Session, SessionStore
from collectjob_tools.console.timeline import timeline

HERE = Path(__file__).parent
COOKIE = "collectjob_session"
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
"""Namespaces and job names: DNS labels (and the only values put into URLs)."""
SELECTOR = re.compile(r"^[A-Za-z0-9_./=!,() -]{1,512}$")
WATCH_SECONDS = 20
MAX_STREAMS = 64
"""Live-update streams waiting on a watch at once; each holds a thread for up to
WATCH_SECONDS. They have their own limit, so open pages never starve page requests."""
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True)
class Settings:
    api: client.ApiClient
    """The console's own identity: used for TokenReview only, and for the server and CA."""
    namespace: str = "default"
    template: dict[str, Any] = field(default_factory=dict)
    """The spec a new job starts from (the new-job form overrides its URLs and sizes)."""
    secure_cookies: bool = True
    timeout: float = 10.0


class SecurityHeaders:
    """The same strict headers on every response, static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers[key] = value
            await send(message)

        await self.app(scope, receive, with_headers)


class Refused(Exception):
    """A request the console itself refuses (bad CSRF token, bad name): shown with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[[Request, Session], Awaitable[Response]]


def create_app(settings: Settings) -> Starlette:
    store = SessionStore()
    streams = anyio.CapacityLimiter(MAX_STREAMS)
    templates = Jinja2Templates(
        env=jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    )

    def user_api(session: Session) -> CollectJobClient:
        return CollectJobClient.with_token(
            settings.api.configuration, session.token, settings.timeout
        )

    def page(
        handler: Handler, *, login: bool = True, csrf: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        """Load the session, enforce login and CSRF, render refusals, set the cookie."""

        async def endpoint(request: Request) -> Response:
            session = store.get_or_create(request.cookies.get(COOKIE))
            try:
                if login and not session.authenticated:
                    response: Response = RedirectResponse("/login", status_code=303)
                else:
                    if request.method == "POST" and csrf:
                        form = await request.form()
                        if not session.check_csrf(str(form.get("csrf", ""))):
                            raise Refused(403, "The form's CSRF token is missing or stale.")
                    response = await handler(request, session)
                    session = store.get_or_create(getattr(request.state, "session_id", session.id))
            except Refused as e:
                response = show_error(request, session, e.status, "Refused", str(e))
            except CollectJobError as e:
                if e.status == 401:  # the token expired or was revoked: log in again
                    store.logout(session)
                    response = RedirectResponse("/login", status_code=303)
                else:
                    title = f"The Kubernetes API server refused this ({e.status} {e.reason})"
                    response = show_error(request, session, e.status or 502, title, e.detail)
            response.set_cookie(
                COOKIE,
                session.id,
                httponly=True,
                samesite="strict",
                secure=settings.secure_cookies,
                path="/",
            )
            return response

        return endpoint

    def show_error(request: Request, session: Session, status: int, title: str, detail: str):
        return view(request, session, "error.html", status=status, title=title, detail=detail)

    def view(request: Request, session: Session, template: str, status: int = 200, **context: Any):
        flash, session.flash = session.flash, []
        context = {"session": session, "flash": flash, **context}
        return templates.TemplateResponse(request, template, context, status_code=status)

    def namespace_of(request: Request) -> str:
        ns = request.query_params.get("namespace") or settings.namespace
        if not NAME.match(ns) or len(ns) > 63:
            raise Refused(400, f"{ns[:80]!r} is not a namespace name.")
        return ns

    def path_names(request: Request) -> tuple[str, str]:
        ns, name = request.path_params["namespace"], request.path_params["name"]
        if not (NAME.match(ns) and NAME.match(name)) or len(ns) > 63 or len(name) > 63:
            raise Refused(400, "Not a namespace and job name.")
        return ns, name

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    # Login and logout.

    async def login_form(request: Request, session: Session) -> Response:
        return view(request, session, "login.html")

    async def login(request: Request, session: Session) -> Response:
        token = str((await request.form()).get("token", "")).strip()
        return await _start(request, session, token)

    async def login_once(request: Request, session: Session) -> Response:
        token = store.redeem(request.path_params["code"])
        if token is None:
            raise Refused(403, "This login link was used already or has expired.")
        return await _start(request, session, token)

    async def _start(request: Request, session: Session, token: str) -> Response:
        who = await in_thread(auth.review_token, settings.api, token, settings.timeout)
        if who is None:
            response = view(
                request,
                session,
                "login.html",
                status=401,
                error="The Kubernetes API server did not accept this token.",
            )
            return response
        fresh = store.login(session, who.user, who.groups, token)
        request.state.session_id = fresh.id
        return RedirectResponse(f"/jobs?namespace={settings.namespace}", status_code=303)

    async def logout(request: Request, session: Session) -> Response:
        store.logout(session)
        return RedirectResponse("/login", status_code=303)

    # Jobs.

    async def home(request: Request, session: Session) -> Response:
        return RedirectResponse(f"/jobs?namespace={settings.namespace}", status_code=303)

    async def jobs_page(request: Request, session: Session) -> Response:
        ns = namespace_of(request)
        api = user_api(session)
        jobs = await in_thread(api.list, ns)
        rights = await in_thread(auth.rights, api.api, ns, settings.timeout)
        rows = [row(j) for j in jobs]
        return view(
            request,
            session,
            "jobs.html",
            namespace=ns,
            jobs=rows,
            rights=rights,
            actions=[str(a) for a in Action],
        )

    async def job_page(request: Request, session: Session) -> Response:
        ns, name = path_names(request)
        api = user_api(session)
        job = await in_thread(api.get, ns, name)
        events = await in_thread(api.events, ns, name)
        checkpoint = await _optional(in_thread(api.checkpoint, ns, name))
        rights = await in_thread(auth.rights, api.api, ns, settings.timeout)
        now = datetime.now(UTC)
        return view(
            request,
            session,
            "job.html",
            namespace=ns,
            job=row(job),
            raw=job,
            events=events,
            checkpoint=checkpoint,
            rights=rights,
            timeline=timeline(job, events, now),
            actions=[str(a) for a in Action],
        )

    async def stream(request: Request, session: Session) -> Response:
        """Server-sent events: one `job` message per change seen by a watch made with the
        user's token; the watch is renewed every WATCH_SECONDS until the page goes away."""
        ns = namespace_of(request)
        api = user_api(session)

        async def events() -> AsyncIterator[str]:
            while not await request.is_disconnected():
                changes = api.watch(ns, timeout=WATCH_SECONDS)
                yield ": renewed\n\n"
                while True:
                    try:
                        change = await anyio.to_thread.run_sync(
                            next, changes, None, limiter=streams
                        )
                    except CollectJobError as e:
                        yield f"event: failure\ndata: {json.dumps(str(e))}\n\n"
                        return
                    if change is None:
                        break
                    kind, job = change
                    yield f"event: job\ndata: {json.dumps({**row(job), 'change': kind})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def act(request: Request, session: Session) -> Response:
        ns, name = path_names(request)
        form = await request.form()
        try:
            action = Action(request.path_params["action"])
        except ValueError as e:
            raise Refused(404, "No such action.") from e
        back = _local(str(form.get("next", "")), f"/jobs?namespace={ns}")
        if action is Action.TERMINATE and form.get("confirm") != "yes":
            return view(request, session, "confirm.html", namespace=ns, name=name, back=back)
        outcome = await in_thread(user_api(session).act, ns, name, action)
        session.flash.append(
            (
                "ok",
                f"{action.title()} requested for {ns}/{name} "
                f"(phase now {outcome.job.phase or 'Pending'}).",
            )
        )
        return RedirectResponse(back, status_code=303)

    async def bulk(request: Request, session: Session) -> Response:
        form = await request.form()
        ns, selector = str(form.get("namespace", "")), str(form.get("selector", "")).strip()
        if not NAME.match(ns) or not SELECTOR.match(selector):
            raise Refused(400, "A bulk action needs a namespace and a label selector.")
        try:
            action = Action(str(form.get("action", "")))
        except ValueError as e:
            raise Refused(400, "No such action.") from e
        if action is Action.TERMINATE and form.get("confirm") != "yes":
            return view(
                request,
                session,
                "confirm.html",
                namespace=ns,
                selector=selector,
                back=f"/jobs?namespace={ns}",
            )
        api = user_api(session)
        jobs = await in_thread(api.list, ns, selector)
        refused = []
        for job in jobs:
            try:
                await in_thread(api.act, ns, job.name, action)
            except CollectJobError as e:
                refused.append(f"{job.name}: {e.status} {e.detail}")
        kind = "error" if refused else "ok"
        session.flash.append(
            (
                kind,
                f"{action.title()} requested for {len(jobs) - len(refused)} "
                f"of {len(jobs)} jobs matching {selector}.",
            )
        )
        session.flash += [("error", text) for text in refused]
        return RedirectResponse(f"/jobs?namespace={ns}", status_code=303)

    async def new_form(request: Request, session: Session) -> Response:
        ns = namespace_of(request)
        defaults = {
            "name": f"job-{secrets.token_hex(3)}",
            "source": settings.template.get("source", {}).get("url", ""),
            "sink": settings.template.get("sink", {}).get("url", ""),
            "format": settings.template.get("sink", {}).get("format", "jsonl"),
            "throttle": (settings.template.get("throttle") or {}).get("bytesPerSecond", ""),
            "client": "collectjob-console",
            "request": f"r-{secrets.token_hex(4)}",
        }
        return view(request, session, "new.html", namespace=ns, form=defaults)

    async def create(request: Request, session: Session) -> Response:
        form = {k: str(v).strip() for k, v in (await request.form()).items()}
        ns, name = form.get("namespace", ""), form.get("name", "")
        if not NAME.match(ns) or not NAME.match(name):
            raise Refused(400, "The namespace and the name must be DNS labels (a-z, 0-9, -).")
        spec = json.loads(json.dumps(settings.template))  # a deep copy
        spec["source"] = {**spec.get("source", {}), "url": form.get("source", "")}
        spec["sink"] = {
            **spec.get("sink", {}),
            "url": form.get("sink", ""),
            "format": form.get("format", "jsonl"),
        }
        if form.get("throttle"):
            if not form["throttle"].isdigit():
                raise Refused(400, "The throttle is a whole number of bytes per second.")
            spec["throttle"] = {"bytesPerSecond": int(form["throttle"])}
        job = await in_thread(
            lambda: user_api(session).submit(
                ns, name, spec, client_name=form.get("client", ""), request=form.get("request", "")
            )
        )
        session.flash.append(("ok", f"Created {job.namespace}/{job.name}."))
        return RedirectResponse(f"/jobs/{ns}/{name}", status_code=303)

    routes = [
        Route("/", page(home)),
        Route("/login", page(login_form, login=False), methods=["GET"]),
        Route("/login", page(login, login=False), methods=["POST"]),
        Route("/login/once/{code}", page(login_once, login=False), methods=["GET"]),
        Route("/logout", page(logout), methods=["POST"]),
        Route("/jobs", page(jobs_page)),
        Route("/jobs/stream", page(stream)),
        Route("/jobs/new", page(new_form), methods=["GET"]),
        Route("/jobs/new", page(create), methods=["POST"]),
        Route("/jobs/bulk", page(bulk), methods=["POST"]),
        Route("/jobs/{namespace}/{name}", page(job_page)),
        Route("/jobs/{namespace}/{name}/{action}", page(act), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(SecurityHeaders)
    app.state.sessions = store
    return app


def row(job: Job) -> dict[str, Any]:
    """What a page and the live updates show of one job."""
    return {
        "namespace": job.namespace,
        "name": job.name,
        "phase": job.phase or "Pending",
        "percent": round(job.percent, 1),
        "rows": f"{job.rows_processed:,}",
        "rate": render.rate(job),
        "eta": render.eta(job),
        "client": job.client or "-",
        "request": job.request or "-",
        "throttle": render.throttle(job),
        "message": job.message,
        "final": job.final,
    }


def _local(path: str, default: str) -> str:
    """Only paths within the console are followed after an action (no open redirect)."""
    return path if path.startswith("/jobs") and "//" not in path and "\\" not in path else default


async def _optional(call: Awaitable[Any]) -> Any:
    """A part of a page the user may not be allowed to read (the checkpoint) is left out."""
    try:
        return await call
    except CollectJobError as e:
        if e.status in (401, 403):
            return None
        raise
