"""Server interceptors. server.py composes them, outermost first: metrics, audit, error
mapping, auth, rate limit, validation."""

from poet_grpc.api.interceptors.errors import ErrorMappingInterceptor
from poet_grpc.api.interceptors.validation import ValidationInterceptor

__all__ = ["ErrorMappingInterceptor", "ValidationInterceptor"]
