"""The HTTP layer: the FastAPI app, its middleware and fast lane, routes per API (OpenAI, admin,
probes, metrics and dashboard), and the rendering of answers and errors."""
