"""FastAPI dependencies: the services, the caller's role, and GET /search's parameters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import ValidationError

from api.keys import Role, refusal
from api.models import SearchQuery
from api.service import Services
from search.request import SearchRequest

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def require(role: Role) -> Callable[..., Awaitable[None]]:
    """A dependency that lets the request through when its API key has ``role`` (or better)."""

    async def check(svc: ServicesDep, key: Annotated[str | None, Depends(api_key_header)]) -> None:
        if not svc.settings.api.auth:
            return
        refused = refusal(svc.keys, key, role)
        if refused is not None:
            status, message = refused
            raise HTTPException(status, message, {"WWW-Authenticate": "ApiKey"} if status == 401 else None)

    return check


Reader = Depends(require(Role.reader))
Writer = Depends(require(Role.writer))
Admin = Depends(require(Role.admin))


async def search_query(request: Request) -> SearchRequest:
    """GET /search's request (``SearchQuery.parse``, as in the fast lane): a refused query
    string is a 422. A parameter's own errors are located in the query, as FastAPI locates
    them; what its JSON form refuses (a NUL, a date out of range) as that form words it."""
    try:
        query = SearchQuery.read(request.scope["query_string"])
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None
    try:
        return query.to_body().to_request()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def query_parameters(model: type[SearchQuery]) -> list[dict[str, Any]]:
    """The OpenAPI description of a query-parameter model, as FastAPI would write it for a
    ``Query()`` model (the route reads the parameters itself, through ``search_query``)."""
    schema = model.model_json_schema()
    parameters = []
    for name, field in model.model_fields.items():
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": field.is_required()}
        if field.description:
            parameter["description"] = field.description
        parameter["schema"] = schema["properties"][name]
        parameters.append(parameter)
    return parameters
