"""Errors of the config service; every one names the field (a data path) it is about."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem with one node of the config: where, and what a user should read."""

    path: str
    message: str
    tag: str = "invalid-value"  # NETCONF error-tag this maps to
    app_tag: str = ""  # NETCONF error-app-tag: the model's own for a failed `must`

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """Base class: a config operation was refused and nothing was changed."""

    tag = "operation-failed"

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        self.errors = errors or [FieldError("", message, self.tag)]
        super().__init__(message)

    def to_dict(self) -> dict[str, object]:
        return {
            "type": type(self).__name__,
            "message": str(self),
            "errors": [e.to_dict() for e in self.errors],
        }


class ValidationError(ConfigError):
    """The candidate breaks the YANG model or a cross-service rule."""

    tag = "invalid-value"

    def __init__(self, errors: list[FieldError]) -> None:
        lines = "; ".join(str(e) for e in errors)
        super().__init__(f"invalid configuration: {lines}", errors)


class LockedError(ConfigError):
    tag = "lock-denied"


class ConflictError(ConfigError):
    """Running changed under the candidate since it was edited."""

    tag = "resource-denied"


class NotFoundError(ConfigError):
    tag = "data-missing"


class ExistsError(ConfigError):
    tag = "data-exists"


class AccessDenied(ConfigError):
    tag = "access-denied"
