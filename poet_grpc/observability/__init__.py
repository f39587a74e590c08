"""What an operator sees of the running service: metrics, traces and logs."""
