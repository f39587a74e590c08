"""Server interceptors, outermost first: error mapping, then validation."""

from poet_grpc.api.interceptors.errors import ErrorMappingInterceptor
from poet_grpc.api.interceptors.validation import ValidationInterceptor

__all__ = ["ErrorMappingInterceptor", "ValidationInterceptor"]
