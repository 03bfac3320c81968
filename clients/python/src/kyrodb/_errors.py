"""Exceptions: one class per error code the server sends, grouped under a class per HTTP status.

Every error answer of KyroDB is ``{"error": {"code": "...", "message": "..."}}``; the client raises
the class registered for ``code`` (or, for a code this version does not know, the class of the
status), carrying the server's message::

    try:
        client.collection_info("nope")
    except kyrodb.CollectionNotFound as e:
        print(e.code, e.status, e.message)   # collection_not_found 404 no collection named "nope"
"""

from __future__ import annotations

from typing import Any


class KyroDBError(Exception):
    """Base of every error this package raises.

    Attributes: ``code`` (the server's stable error code, or ``transport`` / ``timeout`` for a
    failure before any answer), ``message`` (for humans), ``status`` (the HTTP status, 0 when no
    answer came), ``retry_after`` (seconds, when the server asked to retry later).
    """

    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int = 0,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status
        self.retry_after = retry_after
        self.body = body

    def __str__(self) -> str:
        if self.status:
            return f"HTTP {self.status} {self.code}: {self.message}"
        return f"{self.code}: {self.message}"


class TransportError(KyroDBError):
    """The request did not get an answer (connection refused or reset, DNS, TLS)."""

    code = "transport"


class TimeoutError(TransportError):  # noqa: A001 - the package's own, under KyroDBError
    """No answer within the client's timeout."""

    code = "timeout"


# ---- by HTTP status -------------------------------------------------------------------------


class BadRequestError(KyroDBError):
    """400: the request is wrong (the message names the field); nothing was written."""

    code = "bad_request"


class AuthenticationError(KyroDBError):
    """401: no token or an unknown one."""

    code = "unauthorized"


class PermissionDeniedError(KyroDBError):
    """403: the token's role may not do this."""

    code = "forbidden"


class NotFoundError(KyroDBError):
    """404: the key, collection, document or route does not exist."""

    code = "not_found"


class ConflictError(KyroDBError):
    """409: a condition or a concurrent write refused the request; nothing was written."""

    code = "conflict"


class PayloadTooLargeError(KyroDBError):
    """413: a body, value, batch or document over the server's limits."""

    code = "too_large"


class RateLimitedError(KyroDBError):
    """429: over the rate limit (retried automatically, honouring Retry-After)."""

    code = "rate_limited"


class ServerError(KyroDBError):
    """5xx: the server failed (corrupt data, I/O error, internal error)."""

    code = "internal"


class UnavailableError(ServerError):
    """503: busy, closing or writes stopped (busy and rate limits are retried automatically)."""

    code = "unavailable"


# ---- by code ----------------------------------------------------------------------------------


class InvalidRequest(BadRequestError):
    code = "invalid_request"


class InvalidJson(BadRequestError):
    code = "invalid_json"


class InvalidBody(BadRequestError):
    code = "invalid_body"


class InvalidQuery(BadRequestError):
    code = "invalid_query"


class InvalidKey(BadRequestError):
    code = "invalid_key"


class InvalidFilter(BadRequestError):
    code = "invalid_filter"


class InvalidOption(BadRequestError):
    code = "invalid_option"


class InvalidTtl(BadRequestError):
    code = "invalid_ttl"


class InvalidSchema(BadRequestError):
    code = "invalid_schema"


class InvalidKeyspaceName(BadRequestError):
    code = "invalid_keyspace_name"


class ReservedKeyspace(BadRequestError):
    code = "reserved_keyspace"


class UnknownField(BadRequestError):
    code = "unknown_field"


class BatchTooManyOps(BadRequestError):
    code = "batch_too_many_ops"


class TooManyKeys(BadRequestError):
    code = "too_many_keys"


class InvalidApiKey(BadRequestError):
    code = "invalid_api_key"


class InvalidApiKeyId(BadRequestError):
    code = "invalid_api_key_id"


class ModelMismatch(BadRequestError):
    code = "model_mismatch"

class InvalidCollectionName(BadRequestError):
    code = "invalid_collection_name"


class InvalidFieldType(BadRequestError):
    code = "invalid_field_type"


class InvalidDocument(BadRequestError):
    """A document is malformed; the message names the field path."""

    code = "invalid_document"


class InvalidId(BadRequestError):
    code = "invalid_id"


class InvalidVector(BadRequestError):
    """A vector has non-finite values or a zero or overflowing norm."""

    code = "invalid_vector"


class DimensionMismatch(BadRequestError):
    """A vector's length differs from its field's dimension."""

    code = "dimension_mismatch"


class InvalidDatetime(BadRequestError):
    code = "invalid_datetime"


class InvalidFeedback(BadRequestError):
    code = "invalid_feedback"


class InvalidConsistency(BadRequestError):
    code = "invalid_consistency"


class InvalidNodeId(BadRequestError):
    code = "invalid_node_id"


class InvalidRaftAddr(BadRequestError):
    code = "invalid_raft_addr"


class TlsRequired(BadRequestError):
    """Plain HTTP was sent to a TLS port: use an https:// URL."""

    code = "tls_required"


class InvalidBackupTarget(BadRequestError):
    """400: a backup target that is not an absolute directory or ``s3://bucket/prefix``."""

    code = "invalid_backup_target"


class Unauthorized(AuthenticationError):
    code = "unauthorized"


class Forbidden(PermissionDeniedError):
    code = "forbidden"


class BackupDirNotAllowed(PermissionDeniedError):
    """403: the backup target is outside the server's ``backup_dirs``."""

    code = "backup_dir_not_allowed"


class QuotaExceeded(PermissionDeniedError):
    code = "quota_exceeded"


class TenantMismatch(PermissionDeniedError):
    code = "tenant_mismatch"

class HostNotAllowed(PermissionDeniedError):
    code = "host_not_allowed"


class CrossOriginRefused(PermissionDeniedError):
    code = "cross_origin_refused"


class ApiKeyNotFound(NotFoundError):
    code = "api_key_not_found"


class KeyNotFound(NotFoundError):
    code = "not_found"


class NoRoute(NotFoundError):
    code = "no_route"


class NoSuchKeyspace(NotFoundError):
    code = "no_such_keyspace"


class CollectionNotFound(NotFoundError):
    code = "collection_not_found"


class DocumentNotFound(NotFoundError):
    code = "document_not_found"


class NoSuchBackup(NotFoundError):
    code = "no_such_backup"

class NoSuchNode(NotFoundError):
    code = "no_such_node"


class NotClustered(NotFoundError):
    code = "not_clustered"


class MethodNotAllowed(BadRequestError):
    code = "method_not_allowed"


class RequestTimeout(BadRequestError):
    code = "request_timeout"


class ConditionFailed(ConflictError):
    code = "condition_failed"


class WriteConflict(ConflictError):
    code = "write_conflict"


class CollectionExists(ConflictError):
    code = "collection_exists"


class TooManyKeyspaces(ConflictError):
    code = "too_many_keyspaces"


class AuthNotEnabled(ConflictError):
    code = "auth_not_enabled"


class TooManyApiKeys(ConflictError):
    code = "too_many_api_keys"


class ReembedRunning(ConflictError):
    code = "reembed_running"


class BackupInProgress(ConflictError):
    code = "backup_in_progress"

class AlreadyInitialised(ConflictError):
    code = "already_initialised"


class ClusterChangeRefused(ConflictError):
    """409: the membership change is not possible as asked (e.g. the last voter); nothing changed."""

    code = "cluster_change_refused"


class ValueTooLarge(PayloadTooLargeError):
    code = "value_too_large"


class BatchTooLarge(PayloadTooLargeError):
    code = "batch_too_large"


class BodyTooLarge(PayloadTooLargeError):
    code = "body_too_large"


class DocumentTooLarge(PayloadTooLargeError):
    code = "document_too_large"


class TooMany(PayloadTooLargeError):
    code = "too_many"


class ResponseTooLarge(PayloadTooLargeError):
    code = "response_too_large"


class UriTooLong(BadRequestError):
    code = "uri_too_long"


class UnsupportedMediaType(BadRequestError):
    code = "unsupported_media_type"


class HeadersTooLarge(BadRequestError):
    code = "headers_too_large"


class RateLimited(RateLimitedError):
    code = "rate_limited"


class MemoryBudget(ServerError):
    code = "memory_budget"


class Busy(UnavailableError):
    code = "busy"


class Closed(UnavailableError):
    code = "closed"


class ShuttingDown(UnavailableError):
    code = "shutting_down"


class WritesStopped(UnavailableError):
    code = "writes_stopped"


class Locked(UnavailableError):
    code = "locked"


class ModelUnavailable(UnavailableError):
    """503: the embedding model is not installed on the server (``kyrodb model install``)."""

    code = "model_unavailable"

class TooManyConnections(UnavailableError):
    code = "too_many_connections"


class ClusterUnavailable(UnavailableError):
    """No leader or quorum answered within the cluster timeout; retry."""

    code = "cluster_unavailable"


class OutcomeUnknown(UnavailableError):
    """The write may or may not have been applied (the leader was lost mid-write)."""

    code = "outcome_unknown"


class ClusterChangeFailed(UnavailableError):
    code = "cluster_change_failed"


class Corrupt(ServerError):
    code = "corrupt"


class IoError(ServerError):
    code = "io"


class IndexBuildFailed(ServerError):
    code = "index_build_failed"


class Internal(ServerError):
    code = "internal"


def _leaves() -> dict[str, type[KyroDBError]]:
    """Every leaf class by its code (each code has exactly one leaf)."""
    out: dict[str, type[KyroDBError]] = {}
    stack: list[type[KyroDBError]] = [KyroDBError]
    while stack:
        cls = stack.pop()
        subs = cls.__subclasses__()
        stack.extend(subs)
        if not subs:
            assert cls.code not in out, f"two classes for {cls.code}"
            out[cls.code] = cls
    return out


#: error code -> exception class
BY_CODE: dict[str, type[KyroDBError]] = _leaves()

_BY_STATUS: dict[int, type[KyroDBError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: BadRequestError,
    408: BadRequestError,
    409: ConflictError,
    413: PayloadTooLargeError,
    414: BadRequestError,
    415: BadRequestError,
    422: BadRequestError,
    429: RateLimitedError,
    431: BadRequestError,
    503: UnavailableError,
}


def error_for(
    status: int, code: str | None, message: str, retry_after: float | None, body: Any
) -> KyroDBError:
    """The exception for an error answer: by its code, else by its status."""
    cls = BY_CODE.get(code or "")
    if cls is None or cls in (KyroDBError, TransportError, TimeoutError):
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else BadRequestError)
    return cls(message, code=code or cls.code, status=status, retry_after=retry_after, body=body)
