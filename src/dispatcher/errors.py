"""The one exception hierarchy; the API maps each class to an HTTP status."""

from __future__ import annotations


class DispatcherError(Exception):
    """Base of every error the dispatcher raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class ConfigError(DispatcherError):
    code = "config_error"


class MigrationError(DispatcherError):
    code = "migration_error"


class BadRequest(DispatcherError):
    status = 400
    code = "bad_request"


class Unauthorized(DispatcherError):
    status = 401
    code = "unauthorized"


class NotFound(DispatcherError):
    status = 404
    code = "not_found"


class MethodNotAllowed(DispatcherError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(DispatcherError):
    status = 408
    code = "request_timeout"


class Conflict(DispatcherError):
    status = 409
    code = "conflict"


class PayloadTooLarge(DispatcherError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(DispatcherError):
    status = 415
    code = "unsupported_media_type"


class ValidationError(DispatcherError):
    status = 422
    code = "validation_error"


class TooManyRequests(DispatcherError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: float, field: str | None = None) -> None:
        super().__init__(message, field)
        self.retry_after = retry_after  # seconds, sent as Retry-After


class Forbidden(DispatcherError):
    status = 403
    code = "forbidden"
