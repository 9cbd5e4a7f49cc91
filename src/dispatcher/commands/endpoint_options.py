"""The delivery option flags of `dispatcher endpoints add|update` (custom headers,
receiver auth, client TLS) as API fields, and their lines in `endpoints show`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from dispatcher.client import Endpoint, basic_auth, bearer_auth, client_tls, oauth2_auth
from dispatcher.transport.validate import header_lines

P = ParamSpec("P")
R = TypeVar("R")

OAUTH2_FLAGS = {"oauth2_token_url": "--oauth2-token-url", "oauth2_client_id":
                "--oauth2-client-id", "oauth2_client_secret": "--oauth2-client-secret"}
OPTION_FLAGS = ("headers", "auth_basic", "auth_bearer", *OAUTH2_FLAGS, "oauth2_scope",
                "oauth2_audience", "client_cert", "client_key", "ca_cert", "clear_headers",
                "clear_auth", "clear_tls")
PEM_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
FROM_FILE = " Or @FILE: read it from FILE (keeps it out of the process list and history)."


def _secret(value: str | None, flag: str) -> str | None:
    """A secret flag's value: as given, or the contents of FILE for `@FILE` (one
    trailing newline dropped, as editors and `echo` add one)."""
    if value is None or not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"{flag}: cannot read {path}: {exc}") from exc
    return text.removesuffix("\n").removesuffix("\r")


def delivery_flags(*, update: bool) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """--header, --auth-*, --oauth2-*, --client-cert/--client-key/--ca-cert, and on
    update the --clear-* flags."""
    replaces = " (replaces all the headers)" if update else ""
    options = [
        click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'",
                     help=f"A custom header sent with every delivery (repeat){replaces}."),
        click.option("--auth-basic", metavar="USER:PASSWORD", default=None,
                     help="HTTP Basic authentication for the receiver." + FROM_FILE),
        click.option("--auth-bearer", metavar="TOKEN", default=None,
                     help="Authorization: Bearer TOKEN for the receiver." + FROM_FILE),
        click.option("--oauth2-token-url", metavar="URL", default=None,
                     help="OAuth2 client credentials: the token endpoint (with "
                          "--oauth2-client-id and --oauth2-client-secret)."),
        click.option("--oauth2-client-id", metavar="ID", default=None,
                     help="OAuth2 client credentials: the client id."),
        click.option("--oauth2-client-secret", metavar="SECRET", default=None,
                     help="OAuth2 client credentials: the client secret." + FROM_FILE),
        click.option("--oauth2-scope", metavar="SCOPE", default=None,
                     help="OAuth2: the scope to ask for (optional)."),
        click.option("--oauth2-audience", metavar="AUDIENCE", default=None,
                     help="OAuth2: the audience to ask for (optional)."),
        click.option("--client-cert", type=PEM_FILE, default=None,
                     help="Mutual TLS: a PEM file with the client certificate (the leaf "
                          "first), with --client-key."),
        click.option("--client-key", type=PEM_FILE, default=None,
                     help="Mutual TLS: a PEM file with the unencrypted private key."),
        click.option("--ca-cert", type=PEM_FILE, default=None,
                     help="Mutual TLS: a PEM file with a private CA to trust for this "
                          "receiver."),
    ]
    if update:
        options += [
            click.option("--clear-headers", is_flag=True, help="Remove every custom header."),
            click.option("--clear-auth", is_flag=True, help="Remove the receiver auth."),
            click.option("--clear-tls", is_flag=True, help="Remove the client certificate."),
        ]

    def apply(fn: Callable[P, R]) -> Callable[P, R]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def _auth(flags: dict[str, Any]) -> dict[str, Any] | None:
    """The auth the flags give, or None when they give none; UsageError when they
    contradict each other."""
    for key, flag in (("auth_basic", "--auth-basic"), ("auth_bearer", "--auth-bearer"),
                      ("oauth2_client_secret", "--oauth2-client-secret")):
        flags[key] = _secret(flags.get(key), flag)
    oauth2: dict[str, Any] = {k: flags.get(k)
                              for k in (*OAUTH2_FLAGS, "oauth2_scope", "oauth2_audience")}
    given = [name for name, on in (("--auth-basic", flags.get("auth_basic") is not None),
                                   ("--auth-bearer", flags.get("auth_bearer") is not None),
                                   ("--oauth2-*", any(v is not None for v in oauth2.values())),
                                   ("--clear-auth", bool(flags.get("clear_auth"))))
             if on]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} exclude each other: give one")
    if flags.get("auth_basic") is not None:
        username, sep, password = flags["auth_basic"].partition(":")
        if not sep:
            raise click.UsageError("--auth-basic must be USER:PASSWORD")
        return basic_auth(username, password)
    if flags.get("auth_bearer") is not None:
        return bearer_auth(flags["auth_bearer"])
    if given == ["--oauth2-*"]:
        missing = [flag for key, flag in OAUTH2_FLAGS.items() if oauth2[key] is None]
        if missing:
            raise click.UsageError(f"OAuth2 auth also needs {', '.join(missing)}")
        return oauth2_auth(oauth2["oauth2_token_url"], oauth2["oauth2_client_id"],
                           oauth2["oauth2_client_secret"], scope=oauth2["oauth2_scope"],
                           audience=oauth2["oauth2_audience"])
    return None


def _tls(flags: dict[str, Any]) -> dict[str, Any] | None:
    cert, key, ca = flags.get("client_cert"), flags.get("client_key"), flags.get("ca_cert")
    if flags.get("clear_tls") and (cert or key or ca):
        raise click.UsageError("--clear-tls excludes --client-cert, --client-key and --ca-cert")
    if not (cert or key or ca):
        return None
    if not (cert and key):
        raise click.UsageError("mutual TLS needs both --client-cert and --client-key")
    try:
        return client_tls(cert, key, ca)
    except (UnicodeDecodeError, OSError) as exc:
        raise click.UsageError(f"cannot read a PEM file: {exc}") from exc


def options_body(flags: dict[str, Any]) -> dict[str, Any]:
    """The delivery options the flags give, as API fields; the flags are removed
    from `flags`."""
    given = {k: flags.pop(k) for k in OPTION_FLAGS if k in flags}
    body: dict[str, Any] = {}
    if given.get("clear_headers") and given.get("headers"):
        raise click.UsageError("--clear-headers excludes --header")
    if given.get("headers"):
        body["headers"] = header_lines(given["headers"])
    elif given.get("clear_headers"):
        body["headers"] = None
    auth = _auth(given)
    if auth is not None:
        body["auth"] = auth
    elif given.get("clear_auth"):
        body["auth"] = None
    tls = _tls(given)
    if tls is not None:
        body["tls"] = tls
    elif given.get("clear_tls"):
        body["tls"] = None
    return body


def option_fields(ep: Endpoint) -> list[tuple[str, Any]]:
    """Lines for the delivery options that are set (never a secret)."""
    out: list[tuple[str, Any]] = [("header", f"{name}: {value}")
                                  for name, value in (ep.headers or {}).items()]
    if ep.auth:
        shown = [f"{k} {ep.auth[k]}" for k in ("username", "token_url", "client_id", "scope",
                                                "audience") if ep.auth.get(k)]
        out.append(("auth", ep.auth["type"] + (f" ({', '.join(shown)})" if shown else "")))
    if ep.tls:
        cert = ep.tls["client_certificate"]
        out.append(("client certificate", f"{cert['subject']} (expires {cert['not_after']})"))
    return out
