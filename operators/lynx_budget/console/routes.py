"""The console's routes under /console: thin handlers over ``pages`` (what a page shows), ``sessions`` (who is
signed in, CSRF), ``signins`` (failed sign-ins) and the CLI's own quick actions (``lynx_budget.admin``)."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from lynx.option_errors import refused_options
from lynx_budget.admin import RAISE_OPTIONS, add_raise, export_csv, pause, resume
from lynx_budget.console import pages
from lynx_budget.console.console import Console
from lynx_budget.console.data import Filters
from lynx_budget.console.sessions import Session, csrf_token, csrf_valid, sign, verify
from lynx_budget.console.signins import failed_signins
from lynx_budget.console.sources import Unreadable
from lynx_budget.store import BudgetChanged

SESSION_COOKIE = "lynx_console_session"
SIGNIN_COOKIE = "lynx_console_signin"  # the nonce the sign-in form's CSRF token is bound to
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# The raise form's fields, named when a value is refused (the CLI names its options instead).
RAISE_FIELDS = {**RAISE_OPTIONS, "amount_eur": "Amount (EUR)", "reason": "Reason"}
ACTIONS = {"pause": pause, "resume": resume}
templates = Environment(loader=PackageLoader("lynx_budget.console", "templates"), autoescape=select_autoescape())


def console_of(request: Request) -> Console | None:
    return getattr(request.app.state, "console", None)


def page(request: Request, template: str, http_status: int = 200, session: Session | None = None,
         headers: dict[str, str] | None = None, **context) -> HTMLResponse:
    console = console_of(request)
    csrf = csrf_token(session.nonce, console.key) if session and console else ""
    html = templates.get_template(template).render(session=session, csrf=csrf, **context)
    return HTMLResponse(html, http_status, headers={"Cache-Control": "no-store", **(headers or {})})


def refused(request: Request, status: int, title: str, message: str, session: Session | None = None,
            headers: dict[str, str] | None = None) -> HTMLResponse:
    return page(request, "refused.html", status, session, headers, title=title, message=message)


NOT_SERVED = "The console is turned off on this budget controller (LYNX_CONSOLE_ENABLED)."


def signed_in(request: Request) -> tuple[Console, Session] | Response:
    """The console and the request's session; else the answer: 404 with the console off, or to the sign-in page."""
    console = console_of(request)
    if console is None:
        return refused(request, 404, "No console", NOT_SERVED)
    session = verify(request.cookies.get(SESSION_COOKIE), console.key, console.now().timestamp())
    if session is None or not console.still_valid(session):
        return RedirectResponse("/console/signin", 303)
    return console, session


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value of each)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def console_router() -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)

    @router.get("/signin")
    async def signin_form(request: Request) -> Response:
        console = console_of(request)
        if console is None:
            return refused(request, 404, "No console", NOT_SERVED)
        nonce = request.cookies.get(SIGNIN_COOKIE) or Session.fresh_nonce()
        response = page(request, "signin.html", signin_csrf=csrf_token(nonce, console.key))
        set_cookie(response, console, SIGNIN_COOKIE, nonce, "/console/signin")
        return response

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        console = console_of(request)
        if console is None:
            return refused(request, 404, "No console", NOT_SERVED)
        client = request.client.host if request.client else "unknown"
        now = console.now().timestamp()
        if (wait := console.signins.retry_after(client, now)) is not None:
            failed_signins().inc()
            return refused(request, 429, "Too many failed sign-ins",
                           f"This client failed to sign in too often. Try again in {wait} s.",
                           headers={"Retry-After": str(wait)})
        form = await form_of(request)
        nonce = request.cookies.get(SIGNIN_COOKIE, "")
        if not nonce or not csrf_valid(nonce, console.key, form.get("csrf")):
            return refused(request, 403, "Sign-in form expired",
                           "The sign-in form's CSRF token is missing or wrong: open the sign-in page again.")
        session = console.sign_in(form.get("token", "").strip())
        if session is None:
            console.signins.failed(client, now)
            failed_signins().inc()
            return page(request, "signin.html", 401, signin_csrf=csrf_token(nonce, console.key),
                        error="That is neither the admin token nor a tenant's API key.")
        target = "/console/" if session.role == "admin" else f"/console/tenants/{quote(session.subject)}"
        response = RedirectResponse(target, 303)
        set_cookie(response, console, SESSION_COOKIE, sign(session, console.key), "/console",
                   console.settings.session_hours * 3600)
        response.delete_cookie(SIGNIN_COOKIE, path="/console/signin")
        return response

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        if isinstance(signed := signed_in(request), Response):
            return signed
        console, session = signed
        if not csrf_valid(session.nonce, console.key, (await form_of(request)).get("csrf")):
            return refused(request, 403, "Refused", "The form's CSRF token is missing or wrong.", session)
        console.signed_out.add(session)  # the cookie, were it kept, opens nothing any more
        response = RedirectResponse("/console/signin", 303)
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    @router.get("/")
    async def overview(request: Request, tenant: str = "", model: str = "") -> Response:
        if isinstance(signed := signed_in(request), Response):
            return signed
        console, session = signed
        if session.role != "admin":
            return RedirectResponse(f"/console/tenants/{quote(session.subject)}", 303)
        context = await asyncio.to_thread(pages.overview, console, Filters(tenant.strip(), model.strip()))
        return page(request, "overview.html", session=session, **context)

    @router.get("/tenants/{tenant}")
    async def tenant_page(request: Request, tenant: str, done: str = "") -> Response:
        if isinstance(signed := signed_in(request), Response):
            return signed
        console, session = signed
        if not session.may_see(tenant):
            return forbidden(request, session)
        context = await asyncio.to_thread(pages.tenant, console, session, tenant)
        return page(request, "tenant.html", session=session, done=done, **context)

    @router.post("/tenants/{tenant}/{action}")
    async def act(request: Request, tenant: str, action: str) -> Response:
        if isinstance(signed := signed_in(request), Response):
            return signed
        console, session = signed
        form = await form_of(request)
        if not csrf_valid(session.nonce, console.key, form.get("csrf")):
            return refused(request, 403, "Refused: no valid CSRF token",
                           "The form's CSRF token is missing or wrong, so nothing was changed: reload the page and "
                           "try again.", session)
        if session.role != "admin":
            return refused(request, 403, "Admins only", "Only the admin may pause, resume or raise a budget.", session)
        if action not in (*ACTIONS, "raise"):
            return refused(request, 404, "No such action", f"{action!r} is not an action: pause, resume or raise.",
                           session)
        store = console.store()
        spec = await asyncio.to_thread(store.get, tenant)
        if spec is None:
            return refused(request, 404, "No budget", f"Tenant {tenant!r} has no budget to {action}: set one with "
                           f"`lynx budget set {tenant} --cap EUR`.", session)
        if action == "raise":
            try:
                spec = add_raise(spec, number(form, "amount", "Amount (EUR)"), number(form, "hours", "Expires in"),
                                 form.get("reason", "").strip(), f"console ({session.subject})", console.now())
            except ValueError as error:
                context = await asyncio.to_thread(pages.tenant, console, session, tenant)
                return page(request, "tenant.html", 400, session, raise_error=refused_options(error, RAISE_FIELDS),
                            done="", **context)
        else:
            spec = ACTIONS[action](spec)
        try:
            await asyncio.to_thread(store.put, spec)
        except BudgetChanged as error:
            return refused(request, 409, "Changed meanwhile", f"{error}: reload the page and try again.", session)
        return RedirectResponse(f"/console/tenants/{quote(tenant)}?done={action}", 303)

    @router.get("/export.csv")
    async def export(request: Request) -> Response:
        if isinstance(signed := signed_in(request), Response):
            return signed
        console, session = signed
        if session.role != "admin":
            return forbidden(request, session)
        text, problem = await asyncio.to_thread(export_csv, console.store(), console.sources.prometheus, console.now())
        headers = {"Content-Disposition": 'attachment; filename="lynx-spend.csv"', "Cache-Control": "no-store"}
        if problem:
            headers["X-Lynx-Export-Problem"] = problem
        return Response(text, media_type="text/csv", headers=headers)

    @router.get("/traces/{trace_id}")
    async def trace_page(request: Request, trace_id: str) -> Response:
        if isinstance(signed := signed_in(request), Response):
            return signed
        console, session = signed
        trace_id = trace_id.lower()
        if not TRACE_ID.match(trace_id):
            return refused(request, 404, "No such trace", "A trace id is 32 hexadecimal digits.", session)
        try:
            context = await asyncio.to_thread(pages.trace, console, trace_id)
        except Unreadable as error:
            return refused(request, 503, "Trace store unreadable", str(error), session, {"Retry-After": "10"})
        if not context["rows"]:
            return refused(request, 404, "Trace not found", f"The trace store holds no trace {trace_id} (it may be "
                           "older than the store keeps, or not sampled).", session)
        if not any(session.may_see(t) for t in context["tenants"]) and session.role != "admin":
            return forbidden(request, session)
        return page(request, "trace.html", session=session, **context)

    return router


def number(form: dict[str, str], field: str, label: str) -> float:
    """A form's number; ValueError naming the field when it is missing or not one."""
    try:
        return float(form.get(field, ""))
    except ValueError:
        raise ValueError(f"{label} takes a number, not {form.get(field, '')!r}") from None


def forbidden(request: Request, session: Session) -> HTMLResponse:
    return refused(request, 403, "Not your tenant",
                   f"You are signed in as the owner of tenant {session.subject}: this page belongs to another tenant, "
                   "and a tenant sees its own data only.", session)


def set_cookie(response: Response, console: Console, name: str, value: str, path: str,
               max_age: float | None = None) -> None:
    response.set_cookie(name, value, max_age=int(max_age) if max_age else None, path=path, httponly=True,
                        samesite="strict", secure=console.settings.secure_cookies)
