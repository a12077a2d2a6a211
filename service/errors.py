"""JSON error responses: every refusal names what is wrong, and the field when there is one."""

from __future__ import annotations

from starlette.responses import Response

from flashwire.core.models import ErrorBody, ErrorDetail


class ApiError(Exception):
    """An HTTP error with a machine-readable code and, when it applies, the field at fault."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers

    def body(self) -> ErrorBody:
        """The error body: {"error": {status, code, message, field?}} (flashwire.core.models.ErrorBody)."""
        detail = ErrorDetail(status=self.status, code=self.code, message=self.message, field=self.field)
        return ErrorBody(error=detail)

    def response(self) -> Response:
        """The error as a JSON response."""
        return Response(
            self.body().model_dump_json(),
            status_code=self.status,
            headers=self.headers,
            media_type="application/json",
        )
