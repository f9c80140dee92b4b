"""Check the pinned dependencies (requirements/lock.txt) against known vulnerabilities with pip-audit.

Exit 0 when nothing is found, 1 on any finding that is not in ``IGNORED`` (each ignore carries its
reason), and 0 with one line saying so when the vulnerability service cannot be reached — an
offline build skips this check instead of failing it. ``make supply-chain`` runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

LOCK = Path(__file__).resolve().parent.parent / "requirements" / "lock.txt"

#: Vulnerability id -> why it does not affect Ferryman. Passed to pip-audit as --ignore-vuln.
IGNORED: dict[str, str] = {}

_UNREACHABLE = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "timed out",
    "Network is unreachable",
)


def verdict(returncode: int, stdout: str, stderr: str) -> tuple[int, str]:
    """Exit code and message for one pip-audit run (``-f json``)."""
    try:
        report: dict[str, Any] = json.loads(stdout)
    except ValueError:
        if any(marker in stderr for marker in _UNREACHABLE):
            return 0, "pip-audit: vulnerability service unreachable; dependency audit skipped"
        return 1, f"pip-audit failed (exit {returncode}):\n{stderr.strip()}"
    dependencies = report.get("dependencies", [])
    findings = [
        f"{dep['name']}=={dep.get('version')}: {vuln['id']} (fixed in {', '.join(vuln.get('fix_versions') or ['-'])})"
        for dep in dependencies
        for vuln in dep.get("vulns", [])
        if vuln["id"] not in IGNORED
    ]
    if findings:
        return 1, "pip-audit found known vulnerabilities:\n  " + "\n  ".join(findings)
    audited = [dep for dep in dependencies if "skip_reason" not in dep]
    if dependencies and not audited:
        # Every package was skipped: the service answered nothing (offline, or a mirror without it).
        return 0, "pip-audit: vulnerability service unreachable; dependency audit skipped"
    skipped = len(dependencies) - len(audited)
    note = f" ({skipped} not found on the index, not audited)" if skipped else ""
    return 0, f"pip-audit: no known vulnerabilities in {len(audited)} pinned packages{note}"


def main() -> int:
    """Run pip-audit on the lock file and print the verdict."""
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--requirement",
        str(LOCK),
        "--no-deps",
        "--disable-pip",
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--timeout",
        "10",
    ]
    for vuln_id in IGNORED:
        command += ["--ignore-vuln", vuln_id]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    code, message = verdict(done.returncode, done.stdout, done.stderr)
    print(message, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
