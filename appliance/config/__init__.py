"""The configuration spine: YANG schema, SQLite store and the transactional config service."""

from appliance.config.errors import (
    ConfigError,
    ConflictError,
    FieldError,
    LockedError,
    NotFoundError,
    ValidationError,
)
from appliance.config.service import ConfigService, Diff, Session

__all__ = [
    "ConfigError",
    "ConfigService",
    "ConflictError",
    "Diff",
    "FieldError",
    "LockedError",
    "NotFoundError",
    "Session",
    "ValidationError",
]
