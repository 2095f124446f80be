"""Pytest fixtures for the fake alpaca server (filled in by its owner)."""
