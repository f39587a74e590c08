"""llm_optimization: functions that call language models over the network."""

from poet_grpc.generator.domains._types import DomainInfo, recorded, reliability_parameters

DOMAIN = DomainInfo(
    name="llm_optimization",
    description=(
        "Functions that call language models over the network. The base reliability stages tuned for "
        "slow, rate-limited remote calls: four retries, backoff from 1 s up to 30 s, a 120 s deadline. "
        "The model parameters are recorded for an LLM stage that the template generator does not "
        "generate yet."
    ),
    parameters=reliability_parameters(
        max_retries=4, backoff_base_seconds=1.0, backoff_max_seconds=30.0, timeout_seconds=120.0
    )
    + (
        recorded("max_tokens", "Token budget of one model call.", 1024),
        recorded("temperature", "Sampling temperature of model calls.", 0.7),
    ),
)
