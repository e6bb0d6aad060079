"""Which provider answers: the registry (names to targets), plans, selection strategies,
provider quotas, the router with fallback, breakers (``breakers/``) and shared health."""
