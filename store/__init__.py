"""PostgreSQL storage: one driver (asyncpg), versioned migrations, repositories."""
from store.db import Database, DatabaseError, EmbeddedPostgres, open_databases
from store.trading import TradingStore

__all__ = ["Database", "DatabaseError", "EmbeddedPostgres", "TradingStore", "open_databases"]
