"""The verdict of tools/audit_dependencies.py on pip-audit's answers (the `make supply-chain` gate)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "audit_dependencies.py"


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_dependencies", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(*dependencies: dict[str, object]) -> str:
    return json.dumps({"dependencies": list(dependencies), "fixes": []})


def test_a_known_vulnerability_fails_naming_package_and_id(audit: ModuleType) -> None:
    vuln = {"id": "PYSEC-2023-74", "fix_versions": ["2.31.0"], "aliases": [], "description": ""}
    code, message = audit.verdict(
        1,
        _report(
            {"name": "requests", "version": "2.19.0", "vulns": [vuln]},
            {"name": "numpy", "version": "2.4.6", "vulns": []},
        ),
        "",
    )
    assert code == 1
    assert "requests==2.19.0: PYSEC-2023-74 (fixed in 2.31.0)" in message


def test_an_ignored_vulnerability_does_not_fail(audit: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(audit.IGNORED, "GHSA-xxxx", "not reachable from Ferryman")
    vuln = {"id": "GHSA-xxxx", "fix_versions": []}
    code, _ = audit.verdict(1, _report({"name": "x", "version": "1", "vulns": [vuln]}), "")
    assert code == 0


def test_clean_audit_passes_and_counts(audit: ModuleType) -> None:
    code, message = audit.verdict(
        0, _report({"name": "a", "version": "1", "vulns": []}, {"name": "b", "skip_reason": "not found"}), ""
    )
    assert (code, message) == (
        0,
        "pip-audit: no known vulnerabilities in 1 pinned packages (1 not found on the index, not audited)",
    )


@pytest.mark.parametrize(
    ("stdout", "stderr"),
    [
        ("", "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.osv.dev'): Max retries exceeded"),
        (_report({"name": "a", "skip_reason": "Dependency not found on PyPI"}), ""),
    ],
)
def test_an_unreachable_service_skips_with_one_message(audit: ModuleType, stdout: str, stderr: str) -> None:
    assert audit.verdict(0, stdout, stderr) == (
        0,
        "pip-audit: vulnerability service unreachable; dependency audit skipped",
    )


def test_any_other_failure_fails(audit: ModuleType) -> None:
    code, message = audit.verdict(2, "", "usage: pip-audit: error: unrecognized arguments")
    assert code == 1 and "unrecognized arguments" in message
