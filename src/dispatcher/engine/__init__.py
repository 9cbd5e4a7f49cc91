"""The delivery path: claim due deliveries, send them, record outcomes."""
