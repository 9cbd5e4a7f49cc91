"""dispatcher: a provider-side webhook delivery and retry engine on PostgreSQL."""

__version__ = "0.1.0"
