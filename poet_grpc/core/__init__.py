"""The service's business logic, free of grpc: enhancement, feedback, the event
log and its streams. `poet_grpc.core.app.Core` wires the pieces to one store."""
