"""Pytest fixtures for the fake opend server (filled in by its owner)."""
