"""The domains the generator knows, one module per domain.

Each module defines `DOMAIN`, a DomainInfo: the base reliability stages with the
domain's defaults, the domain's own parameters, and `code`, which builds the domain's
own Perceive / Enforce / after-call code for one function from its signature
(parameter names and annotations, by conventions the domain's parameters can
override). Where nothing in the signature matches, a domain adds nothing. A new domain
is a new module plus one line below.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from poet_grpc.generator.domains import (
    base_reliability,
    building_management,
    computation,
    data_processing,
    financial_services,
    healthcare,
    llm_optimization,
    ml_monitoring,
    prompt_optimization,
    security,
)
from poet_grpc.generator.domains._types import (
    RELIABILITY_NAMES,
    DomainCode,
    DomainInfo,
    DomainParam,
    Parameter,
    Target,
)

DEFAULT_DOMAIN = "base_reliability"

DOMAINS: Mapping[str, DomainInfo] = MappingProxyType(
    {
        m.DOMAIN.name: m.DOMAIN
        for m in (
            base_reliability,
            computation,
            ml_monitoring,
            llm_optimization,
            prompt_optimization,
            financial_services,
            healthcare,
            building_management,
            data_processing,
            security,
        )
    }
)

__all__ = [
    "DEFAULT_DOMAIN",
    "DOMAINS",
    "RELIABILITY_NAMES",
    "DomainCode",
    "DomainInfo",
    "DomainParam",
    "Parameter",
    "Target",
]
