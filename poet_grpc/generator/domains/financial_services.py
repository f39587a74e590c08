"""financial_services: money-handling functions."""

from poet_grpc.generator.domains._types import DomainInfo, recorded, reliability_parameters

DOMAIN = DomainInfo(
    name="financial_services",
    description=(
        "Money-handling functions. The base reliability stages without automatic retries (a retried "
        "payment may execute twice: set max_retries only for idempotent calls) and with strict checks: "
        "container elements checked, NaN or infinite floats rejected. The compliance parameters are "
        "recorded for a stage that the template generator does not generate yet."
    ),
    parameters=reliability_parameters(max_retries=0, check_element_types=True, reject_non_finite_floats=True)
    + (
        recorded("decimal_places", "Decimal places amounts will be rounded and checked to.", 2),
        recorded("audit_log", "Whether each call will be written to an audit log.", True),
    ),
)
