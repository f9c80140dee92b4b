"""``ferryman keys create|list|rotate|revoke`` and ``ferryman audit log|verify``.

With ``--home`` or ``--database-url`` a command works on the registry database directly, with no
server — how the first admin key is made — and is recorded in the audit trail as ``local:<user>``.
Otherwise it calls the server's API (``--url``) with an admin key (``--api-key``/``FERRYMAN_API_KEY``).
A new key's secret is printed once, alone on stdout (so ``KEY=$(ferryman keys create ...)`` works);
everything else about it goes to stderr.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ferryman.cli.connection import DEFAULT_URL, ApiKeyOption, JsonOption, UrlOption, connect, fail
from ferryman.errors import FerrymanError

if TYPE_CHECKING:
    from ferryman.registry.service import RegistryService

__all__ = ["register"]

keys_app = typer.Typer(help="API keys: create (printed once), list, rotate, revoke.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail: list records, verify the hash chain.", no_args_is_help=True)

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Work on this registry folder directly, without a server.", show_default=False),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Work on this registry database directly, no server.", show_default=False),
]
KeyIdArgument = Annotated[str, typer.Argument(metavar="KEY_ID", help="Key id (or the whole key).", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add ``keys`` and ``audit`` to ``app``."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")


class _LocalRegistry:
    """The same calls as the client's, made on the registry database."""

    def __init__(self, registry: RegistryService) -> None:
        self._registry = registry
        self._who = f"local:{getpass.getuser()}"

    def create_key(self, role: str, *, models: list[str] | None, expires: str | None, name: str) -> dict[str, Any]:
        from ferryman.security.keys import parse_duration

        lifetime = None if expires is None else parse_duration(expires)
        record, plaintext = self._registry.create_key(
            role, models, expires_in=lifetime, name=name, created_by=self._who, source_address="local"
        )
        return {"key": plaintext, **record.to_dict(datetime.now(UTC))}

    def keys(self, *, include_revoked: bool) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        return [record.to_dict(now) for record in self._registry.list_keys(include_revoked=include_revoked)]

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._registry.revoke_key(key_id, by=self._who, source_address="local").to_dict(datetime.now(UTC))

    def rotate_key(self, key_id: str, *, grace: str | None) -> dict[str, Any]:
        from ferryman.security.keys import parse_duration

        lifetime = None if grace is None else parse_duration(grace, option="--grace")
        record, plaintext = self._registry.rotate_key(key_id, by=self._who, grace=lifetime, source_address="local")
        return {"key": plaintext, **record.to_dict(datetime.now(UTC))}

    def audit_log(self, *, since: str | None, **filters: Any) -> list[dict[str, Any]]:
        from ferryman.security.audit_filters import parse_moment

        target = filters.pop("target", None)
        moment = None if since is None else parse_moment(since, option="--since")
        records = self._registry.list_audit(target_prefix=target, since=moment, **filters)
        return [record.to_dict() for record in records]

    def verify_audit(self) -> dict[str, Any]:
        seq, head = self._registry.audit_head()
        return {**self._registry.verify_audit().to_dict(), "head": {"seq": seq, "hash": head}}


@contextmanager
def _backend(home: Path | None, database_url: str | None, url: str, api_key: str | None) -> Iterator[Any]:
    """The registry itself (``--home``/``--database-url``) or a client of the server at ``url``."""
    if home is None and database_url is None:
        with connect(url, api_key) as client:
            yield client
        return
    from ferryman.config import load_settings
    from ferryman.registry.artifacts import ArtifactStore
    from ferryman.registry.service import RegistryService
    from ferryman.registry.store import create_registry_engine, upgrade_to_head

    try:
        settings = load_settings(None, home=home, database_url=database_url)
        settings.home.mkdir(parents=True, exist_ok=True)
        engine = create_registry_engine(settings.resolved_database_url)
        upgrade_to_head(engine)
        yield _LocalRegistry(RegistryService(engine, ArtifactStore(settings.resolved_artifacts_dir)))
    except FerrymanError as exc:
        fail(str(exc))
    except (OSError, ValueError) as exc:
        fail(f"cannot open the registry: {exc}")


def _table(*columns: str) -> Any:
    from rich.table import Table

    table = Table(header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def _key_id(text: str) -> str:
    """A key id, also from a whole key pasted in (so the secret never travels in a URL)."""
    from ferryman.security.keys import key_id_of

    return key_id_of(text.strip()) or text.strip()


def _print_new_key(result: dict[str, Any], json_output: bool, what: str) -> None:
    from rich.console import Console

    from ferryman.cli.output import print_json

    if json_output:
        print_json(result)
        return
    models = ", ".join(result["models"]) if result.get("models") else "every model"
    expires = result.get("expires_at") or "never"
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"{what} key {result['key_id']} (role {result['role']}, {models}; expires {expires}). "
        "The key is printed below, this once: store it now."
    )
    print(result["key"], flush=True)


@keys_app.command("create")
def create_key(
    role: Annotated[str, typer.Option(help="admin, deployer, predictor or viewer.", show_default=False)],
    models: Annotated[
        str | None, typer.Option(help="Comma-separated model names or patterns (fraud-*); default every model.")
    ] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime such as 90d, 12h, 30m; default never.")] = None,
    name: Annotated[str, typer.Option(help="A label for listings and the audit trail.")] = "",
    home: HomeOption = None,
    database_url: DatabaseUrlOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create an API key and print it once."""
    scope = None if models is None else [part.strip() for part in models.split(",") if part.strip()]
    with _backend(home, database_url, url, api_key) as backend:
        result = backend.create_key(role, models=scope, expires=expires, name=name)
    _print_new_key(result, json_output, "Created")


@keys_app.command("list")
def list_keys(
    active: Annotated[bool, typer.Option("--active", help="Leave revoked keys out.")] = False,
    home: HomeOption = None,
    database_url: DatabaseUrlOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """List API keys (never their secrets)."""
    from ferryman.cli.output import format_time, print_json, stdout

    with _backend(home, database_url, url, api_key) as backend:
        keys = backend.keys(include_revoked=not active)
    if json_output:
        print_json({"keys": keys})
        return
    table = _table("KEY", "NAME", "ROLE", "MODELS", "STATE", "CREATED", "EXPIRES", "LAST USED")
    for key in keys:
        table.add_row(
            key["hint"],
            key["name"] or "-",
            key["role"],
            ", ".join(key["models"]) if key["models"] else "all",
            key["state"],
            format_time(key["created_at"]),
            format_time(key["expires_at"]),
            format_time(key["last_used_at"]),
        )
    stdout().print(table)


@keys_app.command("rotate")
def rotate_key(
    key_id: KeyIdArgument,
    grace: Annotated[str | None, typer.Option(help="Let the old key work this long (1h, 7d); default: not.")] = None,
    home: HomeOption = None,
    database_url: DatabaseUrlOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Replace a key by a new one with the same name, role and models; print the new key once."""
    with _backend(home, database_url, url, api_key) as backend:
        result = backend.rotate_key(_key_id(key_id), grace=grace)
    _print_new_key(result, json_output, "Rotated: new")


@keys_app.command("revoke")
def revoke_key(
    key_id: KeyIdArgument,
    home: HomeOption = None,
    database_url: DatabaseUrlOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Revoke a key at once (every server sharing the registry follows within a second)."""
    from ferryman.cli.output import print_json, stdout

    with _backend(home, database_url, url, api_key) as backend:
        result = backend.revoke_key(_key_id(key_id))
    if json_output:
        print_json(result)
    else:
        stdout().print(f"Revoked key {result['key_id']} ({result['name'] or 'no name'}, role {result['role']})")


@audit_app.command("log")
def audit_log(
    principal: Annotated[str | None, typer.Option(help="Exact principal, such as key:abc123def456.")] = None,
    action: Annotated[str | None, typer.Option(help="Exact action, or a prefix ending in * (key.*).")] = None,
    target: Annotated[str | None, typer.Option(help="Target prefix, such as models/churn.")] = None,
    outcome: Annotated[str | None, typer.Option(help="success, denied or failed.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO-8601 time, or a duration ago (24h).")] = None,
    limit: Annotated[int, typer.Option(help="Most records to show, newest first.")] = 100,
    home: HomeOption = None,
    database_url: DatabaseUrlOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """List audit records, newest first."""
    from ferryman.cli.output import format_time, print_json, stdout

    with _backend(home, database_url, url, api_key) as backend:
        records = backend.audit_log(
            principal=principal, action=action, target=target, outcome=outcome, since=since, limit=limit
        )
    if json_output:
        print_json({"records": records})
        return
    table = _table("SEQ", "TIME", "PRINCIPAL", "ACTION", "TARGET", "OUTCOME", "FROM")
    for record in records:
        table.add_row(
            str(record["seq"]),
            format_time(record["at"]),
            record["principal"],
            record["action"],
            record["target"] or "-",
            record["outcome"],
            record["source_address"] or "-",
        )
    stdout().print(table)


@audit_app.command("verify")
def audit_verify(
    home: HomeOption = None,
    database_url: DatabaseUrlOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check the audit hash chain; exit 1 when a record was edited, deleted or moved."""
    from ferryman.cli.output import print_json, stdout

    with _backend(home, database_url, url, api_key) as backend:
        result = backend.verify_audit()
    if json_output:
        print_json(result)
    elif result["ok"]:
        head = result["head"]
        stdout().print(f"Audit chain intact: {result['reason']}; head {head['seq']} {head['hash']}")
    if not result["ok"]:
        fail(f"audit chain broken at record {result['first_bad_seq']}: {result['reason']}")
