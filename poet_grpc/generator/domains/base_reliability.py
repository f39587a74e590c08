"""base_reliability: the default domain; the four stages with general-purpose settings."""

from poet_grpc.generator.domains._types import DomainInfo, reliability_parameters

DOMAIN = DomainInfo(
    name="base_reliability",
    description=(
        "General-purpose reliability, the default. Perceive: arguments checked against simple type "
        "annotations. Operate: retries with exponential backoff and jitter on transient errors "
        "(ConnectionError, TimeoutError) and a deadline on the whole call. Enforce: the result checked "
        "against a simple return annotation. Train: in-process execution metrics on the function."
    ),
    parameters=reliability_parameters(),
)
