"""Fakes for tests and benchmarks that speak the real wire protocols over loopback."""
