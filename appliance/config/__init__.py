"""The configuration spine: YANG schema, SQLite store and the transactional config service."""

from appliance.config.errors import (
    ConfigError,
    ConflictError,
    FieldError,
    LockedError,
    NotFoundError,
    ValidationError,
)
from appliance.config.paths import LOAD_BALANCER
from appliance.config.service import DATASTORES, ConfigService, Diff, Session

__all__ = [
    "DATASTORES",
    "LOAD_BALANCER",
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
