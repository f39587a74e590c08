"""The API surface, in the order a request meets it: the gateway (Envoy, REST/JSON),
the server and its interceptors (audit, error mapping, auth, rate limit,
validation), the servicers (PoetService, ProbeService) and the proto mapping.
No business logic: that is poet_grpc.core."""
