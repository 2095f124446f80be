"""Pytest fixtures for the fake anthropic server (filled in by its owner)."""
