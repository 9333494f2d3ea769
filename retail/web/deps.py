"""Dependencies shared by the routers."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from retail.core.errors import RetailError

if TYPE_CHECKING:
    from retail.runtime.services import Services


async def get_services(request: Request) -> Services:
    # A coroutine, not a plain function: FastAPI runs plain-function dependencies in a
    # worker thread, and one thread hop per request costs more than the route itself.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated["Services", Depends(get_services)]


class AdminDisabled(RetailError):
    status, slug, title = 403, "admin-disabled", "Admin endpoints disabled"


class NotAuthorized(RetailError):
    status, slug, title = 401, "not-authorized", "Admin token required"


bearer = HTTPBearer(auto_error=False, description="The value of RETAIL_ADMIN_TOKEN.")


def require_admin(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    token = services.settings.admin_token
    if token is None or not token.get_secret_value():
        raise AdminDisabled(
            "Admin endpoints are disabled because no admin token is configured; "
            "start the service with RETAIL_ADMIN_TOKEN set."
        )
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), token.get_secret_value().encode()
    ):
        raise NotAuthorized("Send `Authorization: Bearer <RETAIL_ADMIN_TOKEN>`.")


AdminDep = Depends(require_admin)
