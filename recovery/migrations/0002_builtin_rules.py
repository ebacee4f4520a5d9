"""The built-in classification rules, covering the tables of the MCP error-handling workflow (source 004).

Priorities run in blocks: 100s for narrow combined rules that must win over broad ones (quota exhaustion is
a 429 that no wait will cure), 200s for exception type names (the most reliable signal), 300s for HTTP status
ranges, 400s for message patterns, 500s for broad fallbacks. Operators can edit, disable or outrank any of
them in the admin; an error no rule matches is internal, medium.
"""

from django.db import migrations

T, F = True, False

# name, priority, kind, class, severity, retryable, counts_toward_breaker, needs_human, criteria
RULES = [
    # --- narrow, must win ---
    ("quota exhausted", 110, "quota_exhausted", "resource", "high", F, T, T,
     {"message_regex": r"insufficient[_ ]quota|quota (has been )?exhausted|billing (hard )?limit|credit balance"}),
    ("context length exceeded", 120, "context_length", "validation", "medium", F, F, F,
     {"message_regex": r"context[_ ]length|maximum context|context window|too many tokens|prompt is too long"}),
    ("database lock (operational error)", 130, "database_lock", "transient", "medium", T, T, F,
     {"type_names": ["OperationalError", "DBAPIError"],
      "message_regex": r"database is locked|deadlock|lock (wait )?timeout|could not obtain lock|could not serialize"}),
    ("connection failure (operational error)", 140, "connection_failed", "transient", "medium", T, T, F,
     {"type_names": ["OperationalError", "InterfaceError", "DBAPIError"],
      "message_regex": r"connection (refused|reset)|could not connect|server closed the connection|"
                       r"connection (is )?closed|terminating connection"}),
    # --- exception type names ---
    ("authentication failed (type)", 200, "authentication_failed", "authentication", "high", F, F, T,
     {"type_names": ["AuthenticationError", "AuthenticationFailed", "NotAuthenticated", "Unauthorized",
                     "InvalidCredentials", "InvalidTokenError", "ExpiredSignatureError", "InvalidAuthToken",
                     "UnauthorizedError", "AuthError", "NoCredentialsError", "ExpiredTokenException"]}),
    ("permission denied (type)", 210, "permission_denied", "authentication", "high", F, F, T,
     {"type_names": ["PermissionDeniedError", "PermissionDenied", "PermissionError", "Forbidden",
                     "ForbiddenError", "AccessDenied", "AccessDeniedException", "InsufficientPrivilege",
                     "NoPermission", "AuthorizationError"]}),
    ("rate limit (type)", 220, "rate_limit", "rate_limit", "medium", T, T, F,
     {"type_names": ["RateLimitError", "RateLimitExceeded", "TooManyRequests", "TooManyRequestsError",
                     "ThrottlingException", "Throttled", "RateLimited", "SlowDown"]}),
    ("database lock (type)", 225, "database_lock", "transient", "medium", T, T, F,
     {"type_names": ["DeadlockDetected", "LockNotAvailable", "SerializationFailure", "LockTimeout",
                     "TransactionRollbackError", "DeadlockError"]}),
    ("connection timeout (type)", 230, "connection_timeout", "transient", "medium", T, T, F,
     {"type_names": ["TimeoutError", "Timeout", "TimeoutException", "ConnectTimeout", "ReadTimeout",
                     "WriteTimeout", "PoolTimeout", "ConnectTimeoutError", "ReadTimeoutError",
                     "APITimeoutError", "asyncio.TimeoutError", "socket.timeout", "QueryCanceled",
                     "SoftTimeLimitExceeded", "TimeLimitExceeded", "DeadlineExceeded", "RequestTimeout"]}),
    ("connection failed (type)", 240, "connection_failed", "transient", "medium", T, T, F,
     {"type_names": ["ConnectionError", "ConnectionRefusedError", "ConnectionResetError",
                     "ConnectionAbortedError", "BrokenPipeError", "ConnectError", "RemoteProtocolError",
                     "APIConnectionError", "NewConnectionError", "MaxRetryError", "ProtocolError",
                     "ChunkedEncodingError", "ServerDisconnectedError", "ClientConnectorError",
                     "ClosedResourceError", "BrokenResourceError", "EndOfStream", "gaierror"]}),
    ("service unavailable (type)", 250, "service_unavailable", "external_service", "high", T, T, F,
     {"type_names": ["ServiceUnavailable", "ServiceUnavailableError", "InternalServerError", "BadGateway",
                     "GatewayTimeout", "OverloadedError", "APIStatusError", "ServerError",
                     "ServiceUnavailableException", "ServerNotReady"]}),
    ("temporary resource (type)", 260, "temporary_resource", "resource", "medium", T, T, F,
     {"type_names": ["ResourceExhausted", "QueueFull", "Full", "BusyLoadingError", "TooManyConnections",
                     "TryAgain", "BlockingIOError", "InterruptedError", "PoolError", "EmptyPoolError",
                     "ChannelError", "OperationalError"]}),
    ("constraint violation (type)", 270, "constraint_violation", "validation", "medium", F, F, F,
     {"type_names": ["IntegrityError", "UniqueViolation", "ForeignKeyViolation", "CheckViolation",
                     "NotNullViolation", "ExclusionViolation", "RestrictViolation", "DataError"]}),
    ("not found (type)", 280, "not_found", "validation", "low", F, F, F,
     {"type_names": ["NotFoundError", "NotFound", "DoesNotExist", "ObjectDoesNotExist", "FileNotFoundError",
                     "ResourceNotFound", "ResourceNotFoundException", "NoSuchKey", "KeyError",
                     "LookupError", "UndefinedTable", "ToolNotFound"]}),
    ("unimplemented (type)", 290, "unimplemented", "validation", "medium", F, F, F,
     {"type_names": ["NotImplementedError", "NotImplemented", "MethodNotFound", "UnimplementedError",
                     "Unimplemented", "UnknownToolError", "NotSupportedError", "UnsupportedOperation"]}),
    ("invalid input (type)", 295, "invalid_input", "validation", "low", F, F, F,
     {"type_names": ["ValueError", "ValidationError", "BadRequestError", "BadRequest",
                     "UnprocessableEntityError", "JSONDecodeError", "InvalidRequestError", "InvalidParams",
                     "SchemaError", "UnicodeDecodeError", "InvalidURL", "InvalidHeader", "ParseError",
                     "ConflictError", "InvalidArgument", "InvalidParameterException"]}),
    ("configuration (type)", 296, "configuration", "fatal", "critical", F, T, T,
     {"type_names": ["ImproperlyConfigured", "ConfigurationError", "InvalidConfiguration",
                     "ModuleNotFoundError", "ImportError", "MissingSchema", "FatalError", "SystemExit"]}),
    ("bug (type)", 298, "bug", "internal", "high", F, F, F,
     {"type_names": ["AttributeError", "NameError", "TypeError", "AssertionError", "ZeroDivisionError",
                     "IndexError", "RecursionError", "UnboundLocalError", "ProgrammingError",
                     "SyntaxError", "UndefinedColumn", "UndefinedFunction"]}),
    ("out of memory (type)", 299, "temporary_resource", "resource", "high", T, T, F,
     {"type_names": ["MemoryError", "OutOfMemoryError", "OSError"],
      "message_regex": r"out of memory|cannot allocate|no space left|disk full|too many open files"}),
    # --- HTTP status ranges ---
    ("authentication failed (401)", 300, "authentication_failed", "authentication", "high", F, F, T,
     {"status_min": 401, "status_max": 401}),
    ("permission denied (403)", 305, "permission_denied", "authentication", "high", F, F, T,
     {"status_min": 403, "status_max": 403}),
    ("rate limit (429)", 310, "rate_limit", "rate_limit", "medium", T, T, F,
     {"status_min": 429, "status_max": 429}),
    ("request timeout (408)", 315, "connection_timeout", "transient", "medium", T, T, F,
     {"status_min": 408, "status_max": 408}),
    ("conflict (409)", 320, "conflict", "transient", "low", T, F, F,
     {"status_min": 409, "status_max": 409}),
    ("locked (423)", 325, "database_lock", "transient", "medium", T, T, F,
     {"status_min": 423, "status_max": 423}),
    ("not found (404, 410)", 330, "not_found", "validation", "low", F, F, F,
     {"status_min": 404, "status_max": 404}),
    ("gone (410)", 331, "not_found", "validation", "low", F, F, F,
     {"status_min": 410, "status_max": 410}),
    ("payload too large (413)", 334, "invalid_input", "validation", "low", F, F, F,
     {"status_min": 413, "status_max": 413}),
    ("invalid input (400, 422)", 335, "invalid_input", "validation", "low", F, F, F,
     {"status_min": 400, "status_max": 400}),
    ("unprocessable (422)", 336, "invalid_input", "validation", "low", F, F, F,
     {"status_min": 422, "status_max": 422}),
    ("unimplemented (501)", 340, "unimplemented", "validation", "medium", F, F, F,
     {"status_min": 501, "status_max": 501}),
    ("gateway timeout (504)", 345, "connection_timeout", "transient", "medium", T, T, F,
     {"status_min": 504, "status_max": 504}),
    ("insufficient storage (507)", 348, "temporary_resource", "resource", "high", T, T, F,
     {"status_min": 507, "status_max": 507}),
    ("service unavailable (5xx)", 350, "service_unavailable", "external_service", "high", T, T, F,
     {"status_min": 500, "status_max": 599}),
    ("other client error (4xx)", 390, "invalid_input", "validation", "low", F, F, F,
     {"status_min": 400, "status_max": 499}),
    # --- message patterns ---
    ("authentication failed (message)", 400, "authentication_failed", "authentication", "high", F, F, T,
     {"message_regex": r"authentication failed|invalid (api[_ ]?key|token|credentials)|unauthori[sz]ed|"
                       r"token (has )?expired|expired token|not authenticated"}),
    ("permission denied (message)", 405, "permission_denied", "authentication", "high", F, F, T,
     {"message_regex": r"permission denied|forbidden|access denied|not permitted|insufficient (privileges|permissions)"}),
    ("rate limit (message)", 410, "rate_limit", "rate_limit", "medium", T, T, F,
     {"message_regex": r"rate[ _-]?limit|too many requests|throttl|quota exceeded|quota"}),
    ("database lock (message)", 415, "database_lock", "transient", "medium", T, T, F,
     {"message_regex": r"deadlock|lock timeout|lock wait timeout|database is locked|could not obtain lock|"
                       r"could not serialize access"}),
    ("connection timeout (message)", 420, "connection_timeout", "transient", "medium", T, T, F,
     {"message_regex": r"timed out|timeout|deadline exceeded"}),
    ("connection failed (message)", 425, "connection_failed", "transient", "medium", T, T, F,
     {"message_regex": r"connection (refused|reset|aborted)|broken pipe|name or service not known|"
                       r"network is unreachable|no route to host|temporary failure in name resolution|"
                       r"server disconnected|connection closed"}),
    ("service unavailable (message)", 430, "service_unavailable", "external_service", "high", T, T, F,
     {"message_regex": r"service unavailable|bad gateway|overloaded|server error|upstream|try again later"}),
    ("temporary resource (message)", 435, "temporary_resource", "resource", "medium", T, T, F,
     {"message_regex": r"queue (is )?full|resource temporarily unavailable|too many connections|"
                       r"out of memory|no space left|disk full|pool (is )?exhausted|busy|loading the dataset"}),
    ("constraint violation (message)", 440, "constraint_violation", "validation", "medium", F, F, F,
     {"message_regex": r"violates .*constraint|duplicate key|unique constraint|foreign key constraint|"
                       r"constraint (failed|violation)"}),
    ("unimplemented (message)", 445, "unimplemented", "validation", "medium", F, F, F,
     {"message_regex": r"not implemented|method not found|unknown tool|tool .* not found|unsupported operation"}),
    ("not found (message)", 450, "not_found", "validation", "low", F, F, F,
     {"message_regex": r"not found|does not exist|no such"}),
    ("invalid input (message)", 455, "invalid_input", "validation", "low", F, F, F,
     {"message_regex": r"invalid|validation (error|failed)|malformed|missing required|schema"}),
    ("fatal (message)", 460, "configuration", "fatal", "fatal", F, T, T,
     {"message_regex": r"\bfatal\b|unrecoverable|corrupt(ed)?\b"}),
    # --- broad fallbacks ---
    ("database error (type, fallback)", 500, "connection_failed", "transient", "medium", T, T, F,
     {"type_names": ["InterfaceError", "DatabaseError"]}),
]


def add_rules(apps, schema_editor):
    Rule = apps.get_model("recovery", "ClassificationRule")
    for name, priority, kind, error_class, severity, retryable, counts, human, criteria in RULES:
        Rule.objects.update_or_create(
            name=name,
            defaults=dict(
                priority=priority, kind=kind, error_class=error_class, severity=severity, retryable=retryable,
                counts_toward_breaker=counts, needs_human=human, builtin=True, enabled=True,
                type_names=criteria.get("type_names", []), status_min=criteria.get("status_min"),
                status_max=criteria.get("status_max"), message_regex=criteria.get("message_regex", ""),
                description="Built in (migration recovery 0002).",
            ),
        )


def remove_rules(apps, schema_editor):
    apps.get_model("recovery", "ClassificationRule").objects.filter(builtin=True).delete()


class Migration(migrations.Migration):
    dependencies = [("recovery", "0001_initial")]
    operations = [migrations.RunPython(add_rules, remove_rules)]
