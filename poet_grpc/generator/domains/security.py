"""security: security-sensitive functions (authentication, crypto, untrusted input)."""

from poet_grpc.generator.domains._types import DomainInfo, recorded, reliability_parameters

DOMAIN = DomainInfo(
    name="security",
    description=(
        "Security-sensitive functions (authentication, cryptography, untrusted input). The base reliability "
        "stages without automatic retries (a retried authentication can trip lockouts) and with strict "
        "checks: container elements checked, NaN or infinite floats rejected. The audit parameter is "
        "recorded for a stage that the template generator does not generate yet."
    ),
    parameters=reliability_parameters(max_retries=0, check_element_types=True, reject_non_finite_floats=True)
    + (recorded("audit_log", "Whether each call will be written to an audit log.", True),),
)
