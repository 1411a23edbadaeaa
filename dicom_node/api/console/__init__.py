"""The node console: server-rendered admin pages under ``/console`` (overview, peers with C-ECHO, routing with
a rule tester, dead letters, models, audit log), served by the node's API.

No script and no external resource: templates (Jinja2, autoescaped), one stylesheet and inline SVG charts all
come from this package, so the console works on an isolated hospital network. Admins log in with a token
(:mod:`.auth`); operators get 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add the console's routes, its stylesheet and its error pages to the node's API app."""
    from fastapi import Request
    from starlette.responses import RedirectResponse, Response
    from starlette.staticfiles import StaticFiles

    from dicom_node.api.console import auth
    from dicom_node.api.console.render import page
    from dicom_node.api.console.routes import router

    app.state.console_used_codes = auth.UsedCodes()
    app.include_router(router)
    app.mount("/console/static", StaticFiles(packages=[("dicom_node.api.console", "static")]), name="console-static")

    @app.exception_handler(auth.LoginRequired)
    def _login(request: Request, exc: auth.LoginRequired) -> Response:
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            from urllib.parse import quote

            return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)
        return page("error.html", status_code=401, message=f"{exc}: your session ended or was never opened")

    @app.exception_handler(auth.AdminRequired)
    def _admin(_request: Request, exc: auth.AdminRequired) -> Response:
        return page("error.html", status_code=403, message=str(exc))

    @app.exception_handler(auth.CsrfRefused)
    def _csrf(_request: Request, exc: auth.CsrfRefused) -> Response:
        return page("error.html", status_code=403, message=str(exc))
