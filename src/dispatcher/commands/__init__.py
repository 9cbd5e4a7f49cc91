"""CLI commands beyond the daemon's own. Those that call a running daemon's API through
`dispatcher.client`, so they work from any machine that can reach it: endpoints,
events, event types, callbacks, tenants (operator keys), trigger and listen; `register`
adds them to the main click group. The sandbox's are in `commands.sandbox`."""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    from dispatcher.commands.callbacks import callbacks_group
    from dispatcher.commands.endpoints import endpoints_group
    from dispatcher.commands.event_types import event_types_group
    from dispatcher.commands.events import events_group
    from dispatcher.commands.tenants import tenants_group
    from dispatcher.commands.trigger import trigger

    for command in (endpoints_group, events_group, event_types_group, callbacks_group,
                    tenants_group, trigger):
        main.add_command(command)
