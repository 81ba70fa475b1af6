"""PostgreSQL: the asyncpg database adapter, its migrations and the embedded server."""
