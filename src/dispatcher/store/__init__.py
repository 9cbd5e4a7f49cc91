"""PostgreSQL access: the pool, the embedded server, migrations and one module of
SQL per aggregate."""
