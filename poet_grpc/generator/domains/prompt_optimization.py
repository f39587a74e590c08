"""prompt_optimization: functions that build or select prompts."""

from poet_grpc.generator.domains._types import DomainInfo, recorded, reliability_parameters

DOMAIN = DomainInfo(
    name="prompt_optimization",
    description=(
        "Functions that build or select prompts. The base reliability stages with default settings. The "
        "prompt parameters are recorded for a prompt-variant stage that the template generator does not "
        "generate yet."
    ),
    parameters=reliability_parameters()
    + (
        recorded("prompt_variants", "Number of prompt variants to compare.", 3),
        recorded("max_prompt_chars", "Longest prompt, in characters, the stage will let through.", 8000),
    ),
)
