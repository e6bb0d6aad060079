"""Circuit breakers: one board per router, the hub every replica of an app shares, and the Redis
relay that shares them between apps."""
