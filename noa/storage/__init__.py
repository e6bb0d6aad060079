"""The database (SQLite or PostgreSQL), its migrations, and the usage records."""
