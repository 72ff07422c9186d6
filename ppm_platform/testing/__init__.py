"""Helpers shared by tests, benchmarks and docs (local Spark standalone + Redis clusters on loopback)."""
