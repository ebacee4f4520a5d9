"""The error vocabulary every part of Rebound shares."""

from __future__ import annotations

from django.db import models


class ErrorClass(models.TextChoices):
    TRANSIENT = "transient"
    RATE_LIMIT = "rate_limit"
    RESOURCE = "resource"
    VALIDATION = "validation"
    AUTHENTICATION = "authentication"
    EXTERNAL_SERVICE = "external_service"
    INTERNAL = "internal"
    FATAL = "fatal"


class Severity(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"
    FATAL = "fatal"


# The finer kinds of the built-in rules: later retry policies key their defaults on these.
class ErrorKind(models.TextChoices):
    CONNECTION_TIMEOUT = "connection_timeout"
    CONNECTION_FAILED = "connection_failed"
    DATABASE_LOCK = "database_lock"
    RATE_LIMIT = "rate_limit"
    QUOTA_EXHAUSTED = "quota_exhausted"
    SERVICE_UNAVAILABLE = "service_unavailable"
    TEMPORARY_RESOURCE = "temporary_resource"
    CONFLICT = "conflict"
    INVALID_INPUT = "invalid_input"
    CONTEXT_LENGTH = "context_length"
    NOT_FOUND = "not_found"
    AUTHENTICATION_FAILED = "authentication_failed"
    PERMISSION_DENIED = "permission_denied"
    CONSTRAINT_VIOLATION = "constraint_violation"
    UNIMPLEMENTED = "unimplemented"
    CONFIGURATION = "configuration"
    BUG = "bug"
    UNKNOWN = "unknown"
