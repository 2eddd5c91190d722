"""The budget controller's console (issue 24) against the real local stack: services exporting to a real Jaeger, a
real Prometheus scraping the gateway and the budget loop, the loop serving the console, `lynx budget` (the real
command line) and Debian's chromium driven by Playwright. One stack for the whole module.

Every figure is checked against a source other than the console: the answers' own costs, the traces Jaeger holds,
the gateway's answers, the command line's output. The browser tests write a screenshot of each page to docs/console/.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import ServiceProcess, free_port, start_service, wait_ready
from lynx.local.stack import load_config, prometheus_config, start_prometheus
from lynx.local.stopping import stop_processes
from lynx.local.topology import BudgetFiles, budget_loop_environment, usage_environment
from lynx.telemetry.tracestore import TraceStoreClient

from .conftest import (
    MODEL_NAME, START_TIMEOUT_SECONDS, Stack, metric_value, published_state, required_binary, start_stack,
    start_trace_store, wait_for,
)

pytestmark = pytest.mark.integration
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
SHORT = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 8, "retrieval_top_k": 0,
         "messages": [{"role": "user", "content": "Name a colour."}]}
TENANTS = ("busy", "quiet", "spare", "tight")
CHROMIUM = "/usr/bin/chromium"
SIGNIN_WINDOW = 8  # seconds: every client of the tests is 127.0.0.1, held back this long after three failures
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class ConsoleBed:
    stack: Stack
    loop: ServiceProcess
    prometheus: ServiceProcess
    trace_store_url: str
    admin_token: str
    cli_env: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)  # what the answers said each tenant was charged
    completions: list[str] = field(default_factory=list)  # what the answers said, never to be shown
    failed_trace: str = ""

    @property
    def console(self) -> str:
        return f"{self.loop.url}/console"

    def budget(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "lynx.cli", "budget", *args], env=self.cli_env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def chat(self, tenant: str) -> httpx.Response:
        response = httpx.post(f"{self.stack.gateway.url}/v1/chat/completions", json=SHORT, timeout=60,
                              headers={"Authorization": f"Bearer {self.keys[tenant]}"})
        self.spent[tenant] = self.spent.get(tenant, 0.0) + ((response.json().get("lynx") or {}).get("cost") or {}
                                                            ).get("total", 0.0)
        self.completions += [choice["message"]["content"] for choice in response.json().get("choices", [])]
        return response

    @contextlib.contextmanager
    def signed_in(self, token: str) -> Iterator[httpx.Client]:
        """An HTTP client signed in with ``token`` through the sign-in form."""
        with httpx.Client(base_url=self.loop.url, timeout=60) as client:
            form = client.get("/console/signin")
            response = client.post("/console/signin", data={"csrf": csrf_of(form.text), "token": token})
            assert response.status_code == 303, response.text
            yield client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@pytest.fixture(scope="module")
def bed(base_env, sink, tmp_path_factory) -> Iterator[ConsoleBed]:
    work = tmp_path_factory.mktemp("console")
    prometheus_binary = required_binary("prometheus", "scripts/build_tools.sh prometheus")
    jaeger, ports = start_trace_store(work / "jaeger")
    started: list[ServiceProcess] = [jaeger]
    try:
        files = BudgetFiles.in_folder(work)
        prometheus_port, loop_port = free_port(), free_port()
        env = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": ports.otlp_url}
        stack = start_stack(env, work, sink, {
            "decoder": {"LYNX_DECODER_FAULTS_ENABLED": "true"},
            "gateway": {"LYNX_GATEWAY_BUDGETS_FILE": str(files.decisions),
                        **usage_environment(f"http://127.0.0.1:{prometheus_port}")}})
        started += stack.processes()
        config = prometheus_config(load_config("prometheus.yml"), {
            "gateway": stack.gateway.url.removeprefix("http://"), "budgets": f"127.0.0.1:{loop_port}"})
        config["global"]["scrape_interval"] = "1s"
        prometheus = start_prometheus(prometheus_binary, config, work / "prometheus", port=prometheus_port)
        started.append(prometheus)
        admin_token_file = work / "console-admin-token"
        loop = start_service("budgets", {
            **env, **budget_loop_environment(files, prometheus.url, 1),
            "LYNX_CONSOLE_ADMIN_TOKEN_FILE": str(admin_token_file),
            "LYNX_CONSOLE_TENANTS_FILE": base_env["LYNX_GATEWAY_TENANTS_FILE"],
            "LYNX_CONSOLE_TRACE_STORE_URL": ports.query_url,
            "LYNX_CONSOLE_FAILED_SIGNINS_ALLOWED": "3", "LYNX_CONSOLE_FAILED_SIGNIN_WINDOW_SECONDS": str(SIGNIN_WINDOW)},
            work / "budgets.log", port=loop_port)
        started.append(loop)
        wait_ready([prometheus, loop], START_TIMEOUT_SECONDS)
        registry = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"]))
        running = ConsoleBed(stack, loop, prometheus, ports.query_url, admin_token_file.read_text().strip(),
                             {**base_env, **files.environment()},
                             {tenant: registry.add(tenant) for tenant in TENANTS})
        for tenant in TENANTS:
            running.budget("set", tenant, "--cap", "5")
        for tenant in ("busy", "busy", "busy", "quiet"):
            assert running.chat(tenant).status_code == 200
        running.failed_trace = failed_request(running)
        yield running
    finally:
        stop_processes(started)


def failed_request(bed: ConsoleBed) -> str:
    """A request of tenant busy that fails in the decoder (its engine steps made to fail): its trace id."""
    set_faults = lambda **plan: httpx.put(f"{bed.stack.decoder.url}/admin/faults", json=plan,  # noqa: E731
                                          timeout=10).raise_for_status()
    set_faults(step_error_rate=1.0)
    try:
        response = bed.chat("busy")
    finally:
        set_faults(step_error_rate=0.0)
    assert response.status_code >= 500, response.text
    return response.headers["x-lynx-trace-id"]


def controller_read(bed: ConsoleBed, tenant: str) -> bool:
    """Whether the budget loop's last reading of the tenant's spend holds what its answers were charged."""
    rows = export_rows(bed.budget("export", "--prometheus", bed.prometheus.url))
    return tenant in rows and rows[tenant]["spent_eur"] != "" and \
        float(rows[tenant]["spent_eur"]) == pytest.approx(bed.spent[tenant], rel=1e-6, abs=1e-12)


def export_rows(text: str) -> dict[str, dict[str, str]]:
    return {row["tenant"]: row for row in csv.DictReader(io.StringIO(text))}


# ---- over HTTP -----------------------------------------------------------------------------------------------------

def test_a_post_without_a_valid_csrf_token_is_refused_and_changes_nothing(bed: ConsoleBed):
    with bed.signed_in(bed.admin_token) as admin:
        page = admin.get("/console/tenants/spare")
        assert page.status_code == 200 and "Pause spare" in page.text
        for form in ({}, {"csrf": "forged"}, {"csrf": csrf_of(page.text)[:-2] + "xx"}):
            refused = admin.post("/console/tenants/spare/pause", data=form)
            assert refused.status_code == 403 and "CSRF" in refused.text
        with bed.signed_in(bed.keys["spare"]) as owner:  # another session's valid token does not fit this one
            other = csrf_of(owner.get("/console/tenants/spare").text)
        assert admin.post("/console/tenants/spare/pause", data={"csrf": other}).status_code == 403
    assert "Paused by an admin" not in bed.budget("why", "spare")


def test_the_csv_export_equals_the_command_lines_and_what_the_answers_were_charged(bed: ConsoleBed):
    wait_for(lambda: controller_read(bed, "busy") and controller_read(bed, "quiet"), 60,
             "the budget loop's reading of what the answers were charged")
    with bed.signed_in(bed.admin_token) as admin:
        exported = admin.get("/console/export.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = export_rows(exported.text)
    for tenant in ("busy", "quiet"):
        assert float(rows[tenant]["spent_eur"]) == pytest.approx(bed.spent[tenant], rel=1e-6, abs=1e-12)
    assert exported.text == bed.budget("export", "--prometheus", bed.prometheus.url)


def test_the_overviews_spend_is_what_the_answers_were_charged(bed: ConsoleBed):
    wait_for(lambda: controller_read(bed, "busy") and controller_read(bed, "quiet"), 60,
             "Prometheus holding what the answers were charged")
    with bed.signed_in(bed.admin_token) as admin:
        page = admin.get("/console/").text
    shown = lambda tenant: float(re.search(  # noqa: E731
        rf'>{tenant}</a></td><td class="num">([0-9.]+) EUR', page).group(1))
    for tenant in ("busy", "quiet"):
        assert shown(tenant) == pytest.approx(bed.spent[tenant], abs=1e-8)
    week, month = (float(total) for total in re.findall(r"Total: ([0-9.]+) EUR", page)[:2])
    assert week == month == pytest.approx(sum(bed.spent.values()), abs=1e-8)  # the stack started today


def test_the_lists_say_how_many_requests_were_served_as_the_gateway_counted_them(bed: ConsoleBed):
    def counted() -> float:  # the gateway's own count of completion requests, from its /metrics
        text = httpx.get(f"{bed.stack.gateway.url}/metrics", timeout=10).text
        return metric_value(text, "lynx_request_total", {"endpoint": "/v1/chat/completions"})

    def said() -> str | None:
        with bed.signed_in(bed.admin_token) as admin:
            found = re.search(r"Every request served in the window was traced \((\d+)\)", admin.get("/console/").text)
        return found and found.group(1) == f"{counted():.0f}" and found.group(1)

    assert int(wait_for(said, 30, "the overview's count of the requests served")) >= 5


def test_a_cap_reached_shows_among_the_caps_approaching_with_its_quick_action(bed: ConsoleBed):
    assert bed.chat("tight").status_code == 200
    bed.budget("set", "tight", "--cap", f"{bed.spent['tight'] / 2:.12f}", "--warning", "50")
    wait_for(lambda: published_state(Path(bed.cli_env["LYNX_BUDGETS_DECISIONS_FILE"]), "tight") == "Blocked", 30,
             "the tight tenant blocked by its cap")
    with bed.signed_in(bed.admin_token) as admin:
        page = admin.get("/console/?tenant=tight").text
        row = re.search(r'<tr><td><a href="/console/tenants/tight">tight</a></td><td class="state-Blocked">Blocked</td>'
                        r'.*?([0-9]+) % \(warning at 50', page, re.S)
        assert row and int(row.group(1)) >= 199, page  # it spent twice its cap
        assert '>busy</a></td><td class="num">' not in page  # the filter keeps the spend of the tenant asked for
        paused = admin.post("/console/tenants/tight/pause", data={"csrf": csrf_of(page)})
        assert paused.status_code == 303
    assert "Paused by an admin" in bed.budget("why", "tight")
    wait_for(lambda: bed.chat("tight").json()["error"]["message"].lower().count("paused"), 10,
             "the gateway refusing the paused tenant as paused")


def test_the_last_failures_link_to_a_trace_page_holding_the_spans_jaeger_holds(bed: ConsoleBed):
    with bed.signed_in(bed.admin_token) as admin:
        overview = wait_for(lambda: (page := admin.get("/console/")).status_code == 200
                            and f"/console/traces/{bed.failed_trace}" in page.text and page, 60,
                            "the failed request in the last failures")
        assert "Today's spend by tenant" in overview.text and ">busy</a>" in overview.text
        trace = admin.get(f"/console/traces/{bed.failed_trace}")
    assert trace.status_code == 200
    shown = set(re.findall(r'data-span-id="([0-9a-f]+)"', trace.text))
    store = TraceStoreClient(bed.trace_store_url)
    try:
        held = {span.span_id for span in store.trace(bed.failed_trace)}
    finally:
        store.close()
    assert shown == held and len(held) > 3
    assert "EUR" in trace.text
    with bed.signed_in(bed.admin_token) as admin:
        pages = [overview.text, trace.text, admin.get("/console/tenants/busy").text,
                 admin.get(f"/console/traces/{next(iter(trace_links(admin, 'quiet')))}").text]
    texts = [SHORT["messages"][0]["content"], *(c.strip() for c in bed.completions if len(c.strip()) >= 8)]
    assert len(texts) > 1 and not [t for t in texts for page in pages if t in page]  # no prompt, no completion


def trace_links(client: httpx.Client, tenant: str) -> set[str]:
    return set(re.findall(r'href="/console/traces/([0-9a-f]{32})"', client.get(f"/console/tenants/{tenant}").text))


def test_a_tenant_key_sees_its_own_pages_only(bed: ConsoleBed):
    with bed.signed_in(bed.keys["quiet"]) as owner:
        own = owner.get("/console/tenants/quiet")
        assert own.status_code == 200 and 'id="spent-today"' in own.text and 'id="spent-30"' in own.text
        assert "Pause quiet" not in own.text  # the quick actions are the admin's
        for path in ("/console/tenants/busy", f"/console/traces/{bed.failed_trace}", "/console/export.csv"):
            refused = owner.get(path)
            assert refused.status_code == 403 and "another tenant" in refused.text, path
        assert owner.get("/console/", follow_redirects=False).headers["location"] == "/console/tenants/quiet"
        form = owner.post("/console/tenants/quiet/pause", data={"csrf": csrf_of(own.text)})
        assert form.status_code == 403 and "Only the admin" in form.text


def test_signing_out_ends_the_session_in_the_browser_and_needs_its_csrf_token(bed: ConsoleBed):
    with bed.signed_in(bed.admin_token) as admin:
        page = admin.get("/console/")
        assert admin.post("/console/signout", data={"csrf": "forged"}).status_code == 403
        assert admin.get("/console/").status_code == 200  # still signed in
        kept = admin.cookies["lynx_console_session"]
        out = admin.post("/console/signout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303 and "lynx_console_session" not in admin.cookies
        assert admin.get("/console/", follow_redirects=False).headers["location"] == "/console/signin"
    # A copy of the cookie kept from before (it is still signed and unexpired) opens nothing either.
    with httpx.Client(base_url=bed.loop.url, timeout=60, cookies={"lynx_console_session": kept}) as replay:
        assert replay.get("/console/", follow_redirects=False).headers["location"] == "/console/signin"


def test_a_tenants_session_ends_when_its_key_is_replaced(bed: ConsoleBed):
    registry = TenantRegistry(Path(bed.cli_env["LYNX_GATEWAY_TENANTS_FILE"]))
    with bed.signed_in(bed.keys["spare"]) as owner:
        assert owner.get("/console/tenants/spare").status_code == 200
        bed.keys["spare"] = registry.add("spare")  # a new key: the old one stops working everywhere
        wait_for(lambda: owner.get("/console/tenants/spare", follow_redirects=False).headers.get("location")
                 == "/console/signin", 10, "the old key's session ended", interval=0.5)
    with bed.signed_in(bed.keys["spare"]) as owner:
        assert owner.get("/console/tenants/spare").status_code == 200


def test_failed_signins_are_counted_and_limited_per_client(bed: ConsoleBed):
    before = metric_value(httpx.get(f"{bed.loop.url}/metrics").text, "lynx_console_failed_signins_total")
    with httpx.Client(base_url=bed.loop.url, timeout=30) as client:
        csrf = csrf_of(client.get("/console/signin").text)
        answers = [client.post("/console/signin", data={"csrf": csrf, "token": "lynx-guess"}) for _ in range(4)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]
        assert int(answers[-1].headers["retry-after"]) > 0
        # Limited: even the right token waits now, until the oldest failure leaves the window.
        assert client.post("/console/signin", data={"csrf": csrf, "token": bed.admin_token}).status_code == 429
        after = metric_value(httpx.get(f"{bed.loop.url}/metrics").text, "lynx_console_failed_signins_total")
        assert after - before == 5
        wait_for(lambda: client.post("/console/signin", data={"csrf": csrf, "token": bed.admin_token}
                                     ).status_code == 303, SIGNIN_WINDOW + 5, "the sign-in limit to lift", interval=1)


# ---- in Debian's chromium --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/debian_install.sh chromium (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def signed_in_page(browser, bed: ConsoleBed, token: str):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{bed.console}/signin")
    page.get_by_label("Admin token or tenant API key").fill(token)
    with page.expect_navigation():
        page.keyboard.press("Enter")  # the form works from the keyboard
    return page


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_browser_admin_pauses_a_tenant_and_the_gateway_refuses_it_within_10_s(browser, bed: ConsoleBed):
    signin = browser.new_context().new_page()
    signin.goto(f"{bed.console}/signin")
    screenshot(signin, "signin")
    page = signed_in_page(browser, bed, bed.admin_token)
    assert page.url == f"{bed.console}/"
    page.locator("#by-tenant ~ table").get_by_role("link", name="busy").wait_for()
    screenshot(page, "overview")
    page.get_by_role("link", name="busy").first.click()
    page.get_by_role("button", name="Pause busy").click()
    assert page.get_by_role("status").inner_text().startswith("Done: pause")
    wait_for(lambda: bed.chat("busy").status_code == 429, 10, "the gateway refusing the paused tenant")
    assert bed.chat("quiet").status_code == 200  # another tenant is served meanwhile
    assert published_state(Path(bed.cli_env["LYNX_BUDGETS_DECISIONS_FILE"]), "busy") == "Paused"
    page.reload()
    assert page.locator("#state").inner_text() == "Paused"
    screenshot(page, "tenant-admin")
    page.get_by_role("button", name="Resume busy").click()
    wait_for(lambda: bed.chat("busy").status_code == 200, 10, "the gateway serving the resumed tenant")


def test_browser_a_raise_with_a_reason_shows_in_the_console_the_cli_and_the_audit(browser, bed: ConsoleBed):
    page = signed_in_page(browser, bed, bed.admin_token)
    page.goto(f"{bed.console}/tenants/quiet")
    page.get_by_label("Amount (EUR)").fill("0.5")
    hours = page.get_by_label("Expires in (hours, at most 72)")
    hours.evaluate("input => input.removeAttribute('max')")  # past the browser's own check: the server refuses too
    hours.fill("100")
    page.get_by_label("Reason").fill("launch day")
    page.get_by_role("button", name="Raise").click()
    assert "at most 72 hours" in page.locator("#raise-error").inner_text()
    page.get_by_label("Amount (EUR)").fill("0.5")
    page.get_by_label("Expires in (hours, at most 72)").fill("12")
    page.get_by_label("Reason").fill("launch day for the quiet tenant")
    page.get_by_role("button", name="Raise").click()
    assert "launch day for the quiet tenant" in page.locator("#raises ~ table").inner_text()
    assert "launch day for the quiet tenant" in bed.budget("why", "quiet")

    def audited() -> bool:
        page.reload()
        return "raise_added" in page.locator("#audit ~ table").inner_text()

    wait_for(audited, 30, "the raise in the tenant's audit history")
    screenshot(page, "tenant-raise")


def test_browser_a_failure_links_to_its_trace_page(browser, bed: ConsoleBed):
    page = signed_in_page(browser, bed, bed.admin_token)
    link = page.locator(f'#failures ~ table a[href="/console/traces/{bed.failed_trace}"]')
    wait_for(lambda: link.count() or page.reload() and False, 60, "the failed request in the last failures")
    link.first.click()
    assert page.url == f"{bed.console}/traces/{bed.failed_trace}"
    store = TraceStoreClient(bed.trace_store_url)
    try:
        held = store.trace(bed.failed_trace)
    finally:
        store.close()
    assert page.locator("#spans tbody tr").count() == len(held)
    screenshot(page, "trace")


def test_browser_a_tenant_sees_its_own_page_and_403_on_anothers(browser, bed: ConsoleBed):
    page = signed_in_page(browser, bed, bed.keys["busy"])
    assert page.url == f"{bed.console}/tenants/busy"
    assert page.locator("#recent ~ table").get_by_role("link").count() >= 1
    screenshot(page, "tenant-owner")
    answer = page.goto(f"{bed.console}/tenants/quiet")
    assert answer.status == 403 and "another tenant" in page.get_by_role("alert").inner_text()
    screenshot(page, "tenant-refused")


def test_browser_a_forged_csrf_token_is_refused(browser, bed: ConsoleBed):
    page = signed_in_page(browser, bed, bed.admin_token)
    page.goto(f"{bed.console}/tenants/spare")
    page.locator('form[action$="/pause"] input[name="csrf"]').evaluate("input => input.value = 'forged'")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Pause spare").click()
    assert posted.value.status == 403
    assert "CSRF" in page.get_by_role("alert").inner_text()
    screenshot(page, "csrf-refused")
    assert "Paused by an admin" not in bed.budget("why", "spare")
