"""What operators see: JSON logs with PII masked, metrics (per replica, summed across them),
tracing, error reporting, dependency checks."""
