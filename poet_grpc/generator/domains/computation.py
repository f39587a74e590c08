"""computation: numeric and CPU-bound functions."""

from poet_grpc.generator.domains._types import DomainInfo, reliability_parameters

DOMAIN = DomainInfo(
    name="computation",
    description=(
        "Numeric and CPU-bound functions. The base reliability stages with settings for pure computation: "
        "one retry (computation rarely fails transiently), a 60 s deadline, and NaN or infinite floats "
        "rejected on float-annotated arguments and results."
    ),
    parameters=reliability_parameters(max_retries=1, timeout_seconds=60.0, reject_non_finite_floats=True),
)
