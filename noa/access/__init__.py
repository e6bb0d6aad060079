"""Who may call and what they may spend: identity (master key, API keys, JWT), the key and
team stores, limits and their backends (in process, Redis, the LimiterActor), admission and
accounting."""
