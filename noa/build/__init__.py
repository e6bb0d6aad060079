"""The one place that wires NOA's cores together from a ``NoaConfig``.

    providers.py  enabled providers, the cloud SDK clients, llama.cpp in or out of process
    routing.py    the registry, quotas, the router (linked to the app's shared health)
    cache.py      the response cache's tiers and single flight
    access.py     keys, teams, authentication, the limiter, admission, accounting
    health.py     the app's health center (the HealthActor's core)
    gateway.py    a Gateway replica: all of the above, the service, probes, the ASGI app

Collaborators are constructor arguments: nothing here assigns one onto an object after it
was built. ``deployments/`` calls these with Serve handles; tests and tools call them with
everything in-process.
"""
