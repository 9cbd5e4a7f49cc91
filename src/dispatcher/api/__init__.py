"""The HTTP side of the daemon: health, management API under /v1, metrics."""
