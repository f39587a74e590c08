"""building_management: building automation (HVAC, sensors, setpoints)."""

from poet_grpc.generator.domains._types import DomainInfo, recorded, reliability_parameters

DOMAIN = DomainInfo(
    name="building_management",
    description=(
        "Building automation (HVAC setpoints, sensor reads). The base reliability stages tuned for device "
        "I/O: a 10 s deadline, backoff from 0.5 s, NaN or infinite sensor values rejected on float-annotated "
        "arguments and results. The setpoint and staleness limits are recorded for a safety-limits stage "
        "that the template generator does not generate yet."
    ),
    parameters=reliability_parameters(timeout_seconds=10.0, backoff_base_seconds=0.5, reject_non_finite_floats=True)
    + (
        recorded("setpoint_min_celsius", "Lowest temperature setpoint the stage will allow.", 16.0),
        recorded("setpoint_max_celsius", "Highest temperature setpoint the stage will allow.", 28.0),
        recorded("sensor_stale_seconds", "Age after which a sensor reading will count as stale.", 300),
    ),
)
