"""ml_monitoring: model and data monitoring functions."""

from poet_grpc.generator.domains._types import DomainInfo, recorded, reliability_parameters

DOMAIN = DomainInfo(
    name="ml_monitoring",
    description=(
        "Model and data monitoring (drift checks, metric computations). The base reliability stages with "
        "NaN or infinite floats rejected on float-annotated arguments and results. The drift parameters "
        "are recorded for a drift-detection stage that the template generator does not generate yet."
    ),
    parameters=reliability_parameters(reject_non_finite_floats=True)
    + (
        recorded("drift_threshold", "Drift score above which the drift stage will report drift.", 0.1),
        recorded("window_size", "Number of observations in one drift comparison window.", 1000),
    ),
)
