"""healthcare: clinical and patient-data functions."""

from poet_grpc.generator.domains._types import DomainInfo, recorded, reliability_parameters

DOMAIN = DomainInfo(
    name="healthcare",
    description=(
        "Clinical and patient-data functions. The base reliability stages with two retries and strict "
        "checks: container elements checked, NaN or infinite floats rejected. The privacy parameters are "
        "recorded for a stage that the template generator does not generate yet."
    ),
    parameters=reliability_parameters(max_retries=2, check_element_types=True, reject_non_finite_floats=True)
    + (
        recorded("phi_redaction", "Whether protected health information will be redacted from recorded data.", True),
        recorded("audit_log", "Whether each call will be written to an audit log.", True),
    ),
)
