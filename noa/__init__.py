"""NOA: an OpenAI-compatible AI inference gateway whose parts are Ray Serve deployments."""

__version__ = "0.1.0"
