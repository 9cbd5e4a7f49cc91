"""Every request the daemon sends to the outside: building clients, the
connect-time address guard, one `send`, receiver authentication and the
classification of what happened. Used by the engine, the sandbox, the listen relay
and the console; it knows nothing of queues or signatures."""

from dispatcher.transport.options import NO_OPTIONS, EndpointOptions
from dispatcher.transport.send import Exchange, Transport

__all__ = ["NO_OPTIONS", "EndpointOptions", "Exchange", "Transport"]
