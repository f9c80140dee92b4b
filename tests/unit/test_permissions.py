"""Every role and permission against the one table, model restrictions (names and patterns), and require()."""

from __future__ import annotations

import pytest

from ferryman.errors import Forbidden, InvalidInput, Unauthenticated
from ferryman.security import LOCAL_ANONYMOUS, ROLE_PERMISSIONS, Permission, Principal, Role, require
from ferryman.security.permissions import GLOBAL_PERMISSIONS, parse_role, validate_model_scope

#: Written out independently of the table: changing a role's rights must change this test too.
EXPECTED: dict[str, set[str]] = {
    "viewer": {"read", "metrics"},
    "predictor": {"infer", "feedback"},
    "deployer": {
        "read",
        "metrics",
        "infer",
        "feedback",
        "push",
        "delete",
        "alias",
        "traffic",
        "rollout",
        "policy",
        "load",
        "alerts",
    },
    "admin": {
        "read",
        "metrics",
        "infer",
        "feedback",
        "push",
        "delete",
        "alias",
        "traffic",
        "rollout",
        "policy",
        "load",
        "alerts",
        "keys",
        "audit",
        "admin",
    },
}
GLOBAL = {"keys", "audit", "admin"}
SCOPE = ("churn", "fraud-*", "iris-v[12]", "m?")


def test_the_table_names_every_role_and_every_permission_is_granted_to_someone() -> None:
    assert set(ROLE_PERMISSIONS) == set(Role) == set(EXPECTED)
    assert set().union(*ROLE_PERMISSIONS.values()) == set(Permission)
    assert set(GLOBAL_PERMISSIONS) == GLOBAL


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("permission", list(Permission))
def test_every_role_and_permission_without_restriction(role: Role, permission: Permission) -> None:
    principal = Principal("p", role)
    allowed = permission.value in EXPECTED[role.value]
    assert principal.may(permission) is allowed
    assert principal.may(permission, "churn") is allowed
    assert principal.may(permission.value, "anything") is allowed
    if allowed:
        assert require(principal, permission, "churn") is principal
    else:
        with pytest.raises(Forbidden) as caught:
            require(principal, permission, "churn")
        assert caught.value.status == 403
        assert f"'{permission.value}'" in caught.value.message
        assert "'churn'" in caught.value.message
        assert role.value in caught.value.message


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("permission", list(Permission))
def test_every_role_and_permission_limited_to_some_models(role: Role, permission: Permission) -> None:
    principal = Principal("p", role, SCOPE, "abc", "key")
    granted = permission.value in EXPECTED[role.value]
    on_scoped_model = granted and permission.value not in GLOBAL
    for model in ("churn", "fraud-eu", "fraud-", "iris-v1", "iris-v2", "m1", "mx"):
        assert principal.may(permission, model) is on_scoped_model, model
    for model in ("other", "Churn", "churn2", "fraud", "fraudster", "xfraud-eu", "iris-v3", "m12"):
        assert principal.may(permission, model) is False, model
    # Without a model (a list route, filtered later with covers()), only the role counts — but a
    # principal limited to some models never holds a permission over every model.
    assert principal.may(permission) is on_scoped_model


def test_a_restricted_admin_cannot_manage_keys_or_read_the_audit_trail() -> None:
    admin = Principal("ops", Role.ADMIN, ("*",))
    assert admin.may(Permission.PUSH, "anything")
    for permission in (Permission.KEYS, Permission.AUDIT, Permission.ADMIN):
        assert not admin.may(permission)
        with pytest.raises(Forbidden, match="needs access to every model"):
            require(admin, permission)


def test_covers_filters_lists() -> None:
    principal = Principal("p", Role.VIEWER, ("churn", "fraud-*"))
    names = ["churn", "fraud-eu", "fraud", "iris"]
    assert [n for n in names if principal.covers(n)] == ["churn", "fraud-eu"]
    assert all(Principal("p", Role.VIEWER).covers(n) for n in names)
    assert not Principal("p", Role.ADMIN, ()).covers("churn")


def test_require_without_a_principal_is_401_and_forbidden_messages_say_why() -> None:
    with pytest.raises(Unauthenticated) as caught:
        require(None, Permission.READ)
    assert caught.value.status == 401
    assert "credentials required" in caught.value.message

    viewer = Principal("dashboards", Role.VIEWER, key_id="k1")
    with pytest.raises(Forbidden) as denied:
        require(viewer, Permission.PUSH, "churn")
    assert denied.value.message == "'dashboards' (role viewer) lacks the 'push' permission on model 'churn'"
    with pytest.raises(Forbidden, match=r"lacks the 'keys' permission$"):
        require(viewer, Permission.KEYS)

    scoped = Principal("ci", Role.DEPLOYER, ("churn",))
    with pytest.raises(Forbidden) as elsewhere:
        require(scoped, Permission.ALIAS, "fraud")
    assert elsewhere.value.message == (
        "'ci' (role deployer) may not use 'alias' on model 'fraud': its access is limited to other models"
    )
    assert require(scoped, Permission.ALIAS, "churn") is scoped


def test_principal_normalises_role_and_models() -> None:
    principal = Principal("p", "viewer", ["b", "a"], None, "jwt")  # type: ignore[arg-type]
    assert principal.role is Role.VIEWER
    assert principal.models == ("b", "a")
    assert principal == Principal("p", Role.VIEWER, ("b", "a"), None, "jwt")
    assert hash(principal) == hash(Principal("p", Role.VIEWER, ("b", "a"), None, "jwt"))
    with pytest.raises(ValueError):
        Principal("p", "superuser")  # type: ignore[arg-type]


def test_unknown_permissions_are_denied() -> None:
    assert not Principal("root", Role.ADMIN).may("launch-missiles")


def test_local_anonymous_is_an_unrestricted_admin() -> None:
    assert LOCAL_ANONYMOUS.source == "anonymous"
    assert LOCAL_ANONYMOUS.key_id is None
    assert all(LOCAL_ANONYMOUS.may(p, "m") for p in Permission)


def test_parse_role_names_the_field() -> None:
    assert parse_role("deployer") is Role.DEPLOYER
    with pytest.raises(InvalidInput, match=r"^role: expected one of admin, deployer, predictor, viewer, got 'root'$"):
        parse_role("root")
    with pytest.raises(InvalidInput, match=r"^--role: "):
        parse_role("", field="--role")


def test_validate_model_scope() -> None:
    assert validate_model_scope(None) is None
    assert validate_model_scope(["fraud-*", "churn", "churn"]) == ("churn", "fraud-*")
    assert validate_model_scope(("iris-v[12]", "m?")) == ("iris-v[12]", "m?")
    with pytest.raises(InvalidInput, match="at least one"):
        validate_model_scope([])
    with pytest.raises(InvalidInput, match="got a string"):
        validate_model_scope("churn")
    for bad in ("", "a b", "../x", "x/y", "é"):
        with pytest.raises(InvalidInput, match=r"^--models: .* is neither a model name nor a pattern"):
            validate_model_scope([bad], field="--models")
