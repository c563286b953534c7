"""Storage: PostgreSQL connections, the schema migrations (sql/, package data) and the batch writer."""
