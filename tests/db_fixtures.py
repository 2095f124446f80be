"""Database fixtures (embedded PostgreSQL)."""
