"""Route templates: the route a request matched, as a template, through mounts and routers."""

from __future__ import annotations

from typing import Any

from starlette.routing import Mount
from starlette.types import Scope

from reqlog import _foreign

__all__ = ["route_template"]


def route_template(scope: Scope, root_path_at_entry: str, app: Any = None) -> str | None:
    """The matched route as a template (``/users/{uid}/posts/{pid}``), or ``None`` (404).

    Routers record only the innermost route in ``scope["route"]``; the mounts crossed on the
    way show only as the growth of ``root_path``, with actual values (``/users/42``). So the
    mount part is found again by walking the mounts from the app the request entered, which
    costs a few regex matches and only on requests that went through a mount.
    """
    route = scope.get("route")
    root_path = scope.get("root_path", "")
    if root_path == root_path_at_entry and route is not None and not isinstance(route, Mount):
        # No mount crossed (most requests): what the general case below comes to.
        template = _foreign.fastapi_route_template(scope) or getattr(route, "path_format", None)
        if not isinstance(template, str):
            template = getattr(route, "path", None)
        return template if isinstance(template, str) else None
    consumed = len(root_path) - len(root_path_at_entry)
    prefix = ""
    mount: Mount | None = None
    if consumed > 0 and root_path.startswith(root_path_at_entry):
        found = _mount_templates(app, scope.get("path", "")[len(root_path_at_entry) :], consumed)
        if found is None:  # not Starlette mounts: name them by their values, as matched
            prefix = root_path[len(root_path_at_entry) :]
        else:
            prefix, mount = found
    if route is None or isinstance(route, Mount):
        if isinstance(route, Mount) and route is not mount:
            prefix, mount = prefix + route.path, route
        if mount is not None and not mount.routes:
            # A plain ASGI app or static files: they say nothing about what matched.
            return prefix + "/{path}"
        # Not found (here or in a mounted app), unless the framework names it in the scope
        # (Litestar: ``path_template``).
        template = scope.get("path_template")
        return prefix + template if isinstance(template, str) and mount is None else None
    template = _foreign.fastapi_route_template(scope) or getattr(route, "path_format", None)
    if not isinstance(template, str):
        template = getattr(route, "path", None)
    return prefix + template if isinstance(template, str) else None


def _mount_templates(app: Any, path: str, consumed: int) -> tuple[str, Mount | None] | None:
    # Starlette's Router takes the first Mount whose pattern matches; the same walk here.
    template = ""
    mount: Mount | None = None
    routes = getattr(app, "routes", None)
    while consumed > 0:
        for candidate in routes or ():
            match = candidate.path_regex.match(path) if isinstance(candidate, Mount) else None
            if match is not None:
                break
        else:
            return None
        rest = "/" + match.group("path")
        consumed -= len(path) - len(rest)
        path, mount = rest, candidate
        template += candidate.path
        routes = candidate.routes
    return (template, mount) if consumed == 0 else None
