"""The web console against the real local cluster: over HTTP for its security rules, and in
a real headless Chromium (Debian's package, `make browser`) for what a person does.

Three identities, all ServiceAccounts with TokenRequest tokens: the console itself (may
only create TokenReviews), `alice` (the on-call role from deploy/console/roles.yaml) and
`viewer` (read-only). Screenshots go to .artifacts/screenshots/.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client

from collectjob_api.client import CollectJobClient
from collectjob_api.contract import LABEL_REQUEST
from localcluster.client import Cluster
from localcluster.controlplane import free_port
from localcluster.paths import REPO_ROOT
from operator_fixtures import write_csv

pytestmark = pytest.mark.cluster
CONSOLE_BIN = Path(sys.executable).parent / "collectjob-console"
PLUGIN_BIN = Path(sys.executable).parent / "kubectl-collectjob"
SCREENSHOTS = REPO_ROOT / ".artifacts" / "screenshots"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def token_for(core: client.CoreV1Api, namespace: str, account: str) -> str:
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    result = core.create_namespaced_service_account_token(account, namespace, request)
    return str(result.status.token)


@dataclass
class Users:
    alice: str
    viewer: str
    console_kubeconfig: Path


@pytest.fixture
def users(cluster: Cluster, namespace: str, core_api, crd: None, tmp_path: Path) -> Iterator[Users]:
    """The console's own account and two people, bound as deploy/console/ says."""
    cluster.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "console" / "roles.yaml"))
    cluster.kubectl("apply", "-f", "-", input=_console_cluster_role())
    for account in ("console", "alice", "viewer"):
        cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    for account, role in (("alice", "collectjob-operator-user"), ("viewer", "collectjob-viewer")):
        cluster.kubectl(
            "create",
            "rolebinding",
            account,
            "-n",
            namespace,
            f"--clusterrole={role}",
            f"--serviceaccount={namespace}:{account}",
        )
    binding = f"collectjob-console-{namespace}"
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        binding,
        "--clusterrole=collectjob-console",
        f"--serviceaccount={namespace}:console",
    )
    local = yaml.safe_load(cluster.kubeconfig.read_text())
    kubeconfig = tmp_path / "console-kubeconfig"
    console_token = token_for(core_api, namespace, "console")
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "console",
                "clusters": local["clusters"],
                "users": [{"name": "console", "user": {"token": console_token}}],
                "contexts": [
                    {
                        "name": "console",
                        "context": {"cluster": local["clusters"][0]["name"], "user": "console"},
                    }
                ],
            }
        )
    )
    yield Users(
        token_for(core_api, namespace, "alice"),
        token_for(core_api, namespace, "viewer"),
        kubeconfig,
    )
    cluster.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found")


def _console_cluster_role() -> str:
    docs = yaml.safe_load_all((REPO_ROOT / "deploy" / "console" / "rbac.yaml").read_text())
    return yaml.safe_dump(next(d for d in docs if d["kind"] == "ClusterRole"))


@dataclass
class Console:
    url: str
    namespace: str
    log: Path


@pytest.fixture
def console(users: Users, namespace: str, tmp_path: Path, wait_for) -> Iterator[Console]:
    port = free_port()
    log = tmp_path / "console.log"
    token_file = tmp_path / "alice.token"
    token_file.write_text(users.alice)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    argv = [
        str(CONSOLE_BIN),
        "--kubeconfig",
        str(users.console_kubeconfig),
        "--port",
        str(port),
        "--namespace",
        namespace,
        "--login-token-file",
        str(token_file),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        return httpx.get(f"{url}/login", timeout=2).status_code == 200

    wait_for(up, timeout=30, message="the console to serve /login")
    yield Console(url, namespace, log)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    print(f"--- console log ---\n{log.read_text()[-5000:]}")


@pytest.fixture
def running_job(cluster: Cluster, namespace: str, operator, tmp_path: Path, data_volume, wait_for):
    """A job throttled to run for about a minute, so there is time to watch and act."""
    source = write_csv(tmp_path / "input.csv", 20_000)
    body = {
        "apiVersion": "collect.dev/v1alpha1",
        "kind": "CollectJob",
        "metadata": {
            "name": "orders",
            "namespace": namespace,
            "labels": {LABEL_REQUEST: "r-7", "collect.dev/client": "shop"},
        },
        "spec": {
            "source": {"url": source.as_uri()},
            "sink": {"url": (tmp_path / "out").as_uri(), "format": "jsonl"},
            "chunkBytes": 1 << 20,
            "throttle": {"bytesPerSecond": 8192},
            "worker": data_volume.worker,
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

    def phase() -> str:
        out = cluster.kubectl(
            "get", "cjob", "orders", "-n", namespace, "-o", "jsonpath={.status.phase}"
        )
        return out.stdout

    wait_for(lambda: phase() == "Running", timeout=120, message="the job to run")
    return "orders"


def login(url: str, token: str) -> httpx.Client:
    session = httpx.Client(base_url=url, timeout=10, follow_redirects=False)
    csrf = _csrf(session.get("/login").text)
    response = session.post("/login", data={"csrf": csrf, "token": token})
    assert response.status_code == 303, response.text
    return session


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


def test_console_security_over_http(console, users, namespace, running_job, cluster):
    anonymous = httpx.Client(base_url=console.url, timeout=10)
    page = anonymous.get("/login")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and page.headers["x-frame-options"] == "DENY"
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert anonymous.get("/static/console.js").headers["content-security-policy"] == csp

    # Not logged in: no pages; a wrong token is refused by the API server's TokenReview.
    assert anonymous.get("/jobs", follow_redirects=False).headers["location"] == "/login"
    wrong = anonymous.post("/login", data={"csrf": _csrf(page.text), "token": "not-a-token"})
    assert wrong.status_code == 401 and "did not accept this token" in wrong.text

    # A POST without the session's CSRF token is refused by the console itself.
    alice = login(console.url, users.alice)
    no_csrf = alice.post(f"/jobs/{namespace}/{running_job}/suspend", data={})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    assert "Suspend" in alice.get(f"/jobs?namespace={namespace}").text

    # The console's own identity holds no rights to CollectJobs at all.
    sa = f"system:serviceaccount:{namespace}:console"
    for verb in ("get", "list", "patch"):
        can = cluster.kubectl(
            "auth",
            "can-i",
            verb,
            "collectjobs.collect.dev",
            "-n",
            namespace,
            f"--as={sa}",
            check=False,
        )
        assert can.stdout.strip() == "no", (verb, can.stdout)

    # The one-time login link works once.
    link = re.search(r"one-time login link: (\S+)", console.log.read_text()).group(1)
    path = urllib.parse.urlparse(link).path
    first = httpx.get(console.url + path, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/jobs")
    again = httpx.get(console.url + path)
    assert again.status_code == 403 and "used already" in again.text


def test_new_job_form_and_bulk_action_by_selector(console, users, namespace, cluster, tmp_path):
    alice = login(console.url, users.alice)
    form = alice.get(f"/jobs/new?namespace={namespace}")
    assert form.status_code == 200 and 'name="source"' in form.text
    csrf = _csrf(form.text)
    for name in ("from-form-1", "from-form-2"):
        created = alice.post(
            "/jobs/new",
            data={
                "csrf": csrf,
                "namespace": namespace,
                "name": name,
                "source": (tmp_path / "in.csv").as_uri(),
                "sink": (tmp_path / name).as_uri(),
                "format": "jsonl",
                "throttle": "2048",
                "client": "console-test",
                "request": "r-form",
            },
        )
        assert created.status_code == 303 and created.headers["location"].endswith(name)
    job = cluster.kubectl_json("get", "cjob", "from-form-1", "-n", namespace)
    assert job["metadata"]["labels"] == {
        "collect.dev/client": "console-test",
        LABEL_REQUEST: "r-form",
    }
    assert job["spec"]["throttle"] == {"bytesPerSecond": 2048}
    assert job["spec"]["chunkBytes"] == 1048576  # from the console's template

    # The API server's own validation reaches the person: a throttle below 1 KiB/s.
    bad = alice.post(
        "/jobs/new",
        data={
            "csrf": csrf,
            "namespace": namespace,
            "name": "too-slow",
            "format": "jsonl",
            "source": (tmp_path / "in.csv").as_uri(),
            "sink": (tmp_path / "x").as_uri(),
            "throttle": "10",
        },
    )
    assert bad.status_code == 422 and "bytesPerSecond" in bad.text

    selector = f"{LABEL_REQUEST}=r-form"
    bulk = alice.post(
        "/jobs/bulk",
        data={"csrf": csrf, "namespace": namespace, "selector": selector, "action": "suspend"},
    )
    assert bulk.status_code == 303
    for name in ("from-form-1", "from-form-2"):
        assert cluster.kubectl_json("get", "cjob", name, "-n", namespace)["spec"]["suspend"]
    page = alice.get(bulk.headers["location"]).text
    assert "Suspend requested for 2 of 2 jobs matching" in html.unescape(page)

    # A bulk Terminate asks first and changes nothing until confirmed.
    ask = alice.post(
        "/jobs/bulk",
        data={"csrf": csrf, "namespace": namespace, "selector": selector, "action": "terminate"},
    )
    assert ask.status_code == 200 and 'id="confirm-terminate"' in ask.text
    assert (
        cluster.kubectl_json("get", "cjob", "from-form-1", "-n", namespace)["spec"].get(
            "shutdown", ""
        )
        == ""
    )


# The browser tests.


@pytest.fixture
def browser() -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are missing: run `make browser`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _until(driver, condition, timeout: float, message: str):
    """Poll `condition` until it is truthy. Server-sent events re-render a job's row at any
    moment, so an element found one instant may be stale the next: that is polled again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    )
    return wait.until(condition, message)


def _log_in(driver, console: Console, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{console.url}/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()
    _until(driver, lambda d: d.find_elements(By.ID, "jobs"), 30, "the jobs page")


def _read(driver, selector: str, prop: str):
    """One property of the element `selector`, found and read in one step in the page.

    Server-sent events replace a job's row at any moment: between a find and a read,
    chromedriver reports "Node with given id does not belong to the document" (not a stale
    element) and fails the wait. Missing: NoSuchElementException, which waits ignore."""
    from selenium.common.exceptions import NoSuchElementException

    value = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e[arguments[1]] : null;",
        selector,
        prop,
    )
    if value is None:
        raise NoSuchElementException(selector)
    return value


def _progress(driver, job: str) -> float:
    return float(_read(driver, f"#job-{job} progress", "value"))


def _phase(driver, job: str) -> str:
    return str(_read(driver, f'#job-{job} [data-field="phase"]', "innerText")).strip()


def _click(driver, job: str, action: str) -> None:
    """Click the job's button; a row replaced under the click is found again."""
    from selenium.webdriver.common.by import By

    button = f'button[data-action="{action}"]'
    selector = f"#job-{job} {button}, #actions {button}"
    _until(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True,
        30,
        f"the {action} button to take a click",
    )


def test_operator_user_watches_suspends_resumes_and_terminates(
    browser, console, users, namespace, running_job, apps_api, cluster
):
    from selenium.webdriver.common.by import By

    driver, job = browser, running_job
    driver.get(f"{console.url}/login")
    driver.save_screenshot(str(SCREENSHOTS / "console-login.png"))
    _log_in(driver, console, users.alice)
    assert driver.find_element(By.ID, "user").text == f"system:serviceaccount:{namespace}:alice"

    # Progress moves by itself (server-sent events), without reloading the page.
    _until(driver, lambda d: d.find_element(By.ID, "live").text == "live updates: on", 30, "SSE")
    first = _progress(driver, job)
    _until(driver, lambda d: _progress(d, job) > first, 60, "the progress bar to move")
    assert driver.find_element(By.CSS_SELECTOR, f"#job-{job} td:nth-child(7)").text == "shop"
    driver.save_screenshot(str(SCREENSHOTS / "console-jobs-running.png"))

    _click(driver, job, "suspend")
    _until(driver, lambda d: _phase(d, job) == "Suspended", 90, "Suspended on the page")
    deployment = apps_api.read_namespaced_deployment(f"{job}-worker", namespace)
    assert deployment.spec.replicas == 0
    driver.save_screenshot(str(SCREENSHOTS / "console-suspended.png"))
    held = _progress(driver, job)

    _click(driver, job, "resume")
    _until(driver, lambda d: _phase(d, job) == "Running", 90, "Running again on the page")
    _until(driver, lambda d: _progress(d, job) > held, 90, "progress after the resume")

    driver.find_element(By.LINK_TEXT, job).click()
    _until(driver, lambda d: d.find_elements(By.ID, "timeline"), 30, "the job page")
    segments = driver.find_elements(By.CSS_SELECTOR, "#timeline rect")
    phases = [s.get_attribute("class").split("phase-")[1] for s in segments]
    assert "Suspended" in phases and phases[-1] == "Running", phases
    assert "Offset" in driver.find_element(By.ID, "checkpoint").text
    assert "Suspended" in driver.find_element(By.ID, "events").text
    driver.save_screenshot(str(SCREENSHOTS / "console-job-page.png"))

    # Terminate asks first; Cancel leaves the job running.
    _click(driver, job, "terminate")
    _until(driver, lambda d: d.find_elements(By.ID, "confirm-terminate"), 30, "the confirmation")
    driver.save_screenshot(str(SCREENSHOTS / "console-terminate-confirm.png"))
    driver.find_element(By.ID, "cancel").click()
    _until(driver, lambda d: d.find_elements(By.ID, "timeline"), 30, "back on the job page")
    spec = cluster.kubectl_json("get", "cjob", job, "-n", namespace)["spec"]
    assert spec.get("shutdown", "") == ""

    _click(driver, job, "terminate")
    _until(driver, lambda d: d.find_elements(By.ID, "confirm-terminate"), 30, "the confirmation")
    driver.find_element(By.ID, "confirm-terminate").click()
    _until(driver, lambda d: _phase(d, job) == "Terminated", 90, "Terminated on the page")
    assert apps_api.read_namespaced_deployment(f"{job}-worker", namespace).spec.replicas == 0


def test_read_only_user_sees_no_buttons_and_a_forged_post_is_refused(
    browser, console, users, namespace, running_job, cluster
):
    from selenium.webdriver.common.by import By

    driver, job = browser, running_job
    _log_in(driver, console, users.viewer)
    assert driver.find_elements(By.CSS_SELECTOR, f"#job-{job}")
    assert not driver.find_elements(By.CSS_SELECTOR, "button[data-action]")
    assert not driver.find_elements(By.ID, "bulk") and not driver.find_elements(By.ID, "new-job")
    driver.save_screenshot(str(SCREENSHOTS / "console-read-only.png"))

    # Forge the Suspend form the page did not offer, with a valid CSRF token of this session:
    # the console passes it on with the viewer's token, and the API server says no.
    driver.execute_script(
        """const f = document.createElement('form');
        f.method = 'post'; f.action = arguments[0];
        const i = document.createElement('input');
        i.type = 'hidden'; i.name = 'csrf';
        i.value = document.querySelector('meta[name=csrf-token]').content;
        f.appendChild(i); document.body.appendChild(f); f.submit();""",
        f"/jobs/{namespace}/{job}/suspend",
    )
    _until(driver, lambda d: d.find_elements(By.ID, "error-title"), 30, "the refusal")
    title = driver.find_element(By.ID, "error-title").text
    detail = driver.find_element(By.ID, "error-detail").text
    assert "403 Forbidden" in title
    assert f"system:serviceaccount:{namespace}:viewer" in detail and "patch" in detail
    driver.save_screenshot(str(SCREENSHOTS / "console-forged-post-refused.png"))
    spec = cluster.kubectl_json("get", "cjob", job, "-n", namespace)["spec"]
    assert spec["suspend"] is False


def test_plugin_get_screenshot_for_the_readme(browser, cluster, namespace, running_job, wait_for):
    """The README shows `kubectl collectjob get -o wide` as it printed here."""
    api = CollectJobClient.from_kubeconfig(str(cluster.kubeconfig))
    wait_for(lambda: api.get(namespace, running_job).percent > 10, timeout=120, message="10%")
    out = subprocess.run(
        [
            str(PLUGIN_BIN),
            "get",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            namespace,
            "-o",
            "wide",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and running_job in out.stdout, out.stderr
    page = SCREENSHOTS / "plugin-get.html"
    page.write_text(
        "<!doctype html><meta charset='utf-8'>"
        "<body style='background:#1d2330;color:#e6e6e6;margin:0;padding:16px'>"
        "<pre style='font:14px monospace;display:inline-block;padding:12px;margin:0'>"
        "$ kubectl collectjob get -o wide\n"
        f"{html.escape(out.stdout)}</pre>"
    )
    from selenium.webdriver.common.by import By

    browser.set_window_size(1400, 900)
    browser.get(page.as_uri())
    browser.find_element(By.TAG_NAME, "pre").screenshot(str(SCREENSHOTS / "plugin-get.png"))
    assert (
        json.loads(
            subprocess.run(
                [
                    str(PLUGIN_BIN),
                    "get",
                    running_job,
                    "--kubeconfig",
                    str(cluster.kubeconfig),
                    "-n",
                    namespace,
                    "-o",
                    "json",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )["name"]
        == running_job
    )
