"""Test fixtures shared by every test: PostgreSQL, receivers, daemon subprocesses."""
