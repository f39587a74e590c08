"""data_processing: batch and ETL functions."""

from poet_grpc.generator.domains._types import DomainInfo, recorded, reliability_parameters

DOMAIN = DomainInfo(
    name="data_processing",
    description=(
        "Batch and ETL functions. The base reliability stages with a 300 s deadline; container elements "
        "are not checked (that costs time proportional to the data). The data-quality parameters are "
        "recorded for a stage that the template generator does not generate yet."
    ),
    parameters=reliability_parameters(timeout_seconds=300.0)
    + (
        recorded("batch_size", "Records per batch the stage will process at once.", 1000),
        recorded("max_null_fraction", "Largest fraction of missing values the stage will accept.", 0.05),
    ),
)
