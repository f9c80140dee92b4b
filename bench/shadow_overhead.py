"""What shadow traffic costs the primary: p99 latency at half of peak load, with and without a shadow.

``python -m bench.shadow_overhead [--runs 5] [--seconds 8] [--fractions 1.0 0.1]``

One ``ferryman serve`` process, W1 (logistic regression, 20 features) pushed twice: version 1
(``production``) and version 2 (another regularisation, so its answers differ a little). Peak is
the closed-loop req/s at 32 connections; the measured load is paced at about half of it — wrk
connections that wait a fixed delay between requests, the connection count calibrated once so
the offered rate is ~50% of peak. Then, alternating, ``--runs`` times each: the traffic policy
``{"split": [{"target": "production", "weight": 100}]}`` (no shadow) and the same policy with
``"shadow": {"target": "2", "fraction": F}``. The figure is the median over runs of the primary's
p99 with the shadow divided by the p99 without it, from one run to the next (alternating cancels
slow drifts of this shared machine). Prints a Markdown table for ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
from pathlib import Path

import httpx
import joblib

from bench import wrk
from bench.ferryman_process import start_ferryman
from bench.models import artifact, build, request
from bench.peers.setup import bench_dir
from bench.servers import free_ports


def _second_version(models_dir: Path, out: Path) -> Path:
    from sklearn.linear_model import LogisticRegression

    from bench.models import data

    features, labels = data()
    path = out / "w1-v2.joblib"
    joblib.dump(LogisticRegression(C=0.05, max_iter=1000).fit(features, labels), path)
    return path


def _push(base: str, name: str, path: Path) -> None:
    with path.open("rb") as handle:
        response = httpx.post(
            f"{base}/api/v1/models/{name}/versions", files={"artifact": (path.name, handle)}, timeout=120
        )
    response.raise_for_status()


def _paced_script(plain: Path, delay_ms: int) -> Path:
    paced = plain.with_name(f"paced-{delay_ms}.lua")
    paced.write_text(plain.read_text() + f"\nfunction delay()\n  return {delay_ms}\nend\n")
    return paced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--delay-ms", type=int, default=2)
    args = parser.parse_args()

    models_dir = bench_dir() / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    meta = build(models_dir)
    with tempfile.TemporaryDirectory(prefix="ferryman-shadow-") as scratch:
        root = Path(scratch)
        (port,) = free_ports(1)
        base = f"http://127.0.0.1:{port}"
        process = start_ferryman(root / "home", port)
        try:
            _push(base, "w1", artifact(models_dir, "w1"))
            _push(base, "w1", _second_version(models_dir, root))
            httpx.put(f"{base}/api/v1/models/w1/aliases/production", json={"version": 1}).raise_for_status()
            plain_policy = {"split": [{"target": "production", "weight": 100}]}
            httpx.put(f"{base}/api/v1/models/w1/traffic", json=plain_policy, timeout=60).raise_for_status()
            req = request("ferryman-json", "w1", list(meta["w1"]["row"]))  # type: ignore[call-overload]
            plain = root / "w1.lua"
            wrk.run(base, req, plain, 32, 3)  # warm-up
            peak = wrk.run(base, req, plain, 32, args.seconds)["rps"]
            paced = _paced_script(plain, args.delay_ms)
            target = peak / 2
            connections = 8
            probe = wrk.run(base, req, paced, connections, 3)["rps"]
            connections = max(1, round(connections * target / max(probe, 1)))
            rows = []
            for fraction in args.fractions:
                shadow_policy = {**plain_policy, "shadow": {"target": "2", "fraction": fraction}}
                ratios, p99s_off, p99s_on, rates = [], [], [], []
                for _ in range(args.runs):
                    figures = {}
                    for mode, policy in (("off", plain_policy), ("on", shadow_policy)):
                        httpx.put(f"{base}/api/v1/models/w1/traffic", json=policy, timeout=60).raise_for_status()
                        figures[mode] = wrk.run(base, req, paced, connections, args.seconds)
                    ratios.append(figures["on"]["p99_ms"] / figures["off"]["p99_ms"])
                    p99s_off.append(figures["off"]["p99_ms"])
                    p99s_on.append(figures["on"]["p99_ms"])
                    rates.append(figures["off"]["rps"])
                report = httpx.get(f"{base}/api/v1/models/w1/experiment", timeout=60).json()
                shadow_row = next(row for row in report["versions"] if row["version"] == 2)
                rows.append(
                    {
                        "fraction": fraction,
                        "median_ratio": statistics.median(ratios),
                        "ratios": ratios,
                        "p99_off_ms": statistics.median(p99s_off),
                        "p99_on_ms": statistics.median(p99s_on),
                        "rate": statistics.median(rates),
                        "shadow_comparisons": shadow_row["shadow_comparisons"],
                        "shadow_agreement": shadow_row["shadow_agreement"],
                    }
                )
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    print(json.dumps({"peak_rps": peak, "connections": connections, "rows": rows}, indent=1))
    print()
    print(
        f"Peak (c32, closed loop): {peak:,.0f} req/s; paced load: {connections} connections, {args.delay_ms} ms apart."
    )
    print()
    print(
        "| shadow fraction | offered req/s | primary p99 without / with shadow, ms (medians) "
        "| median of run ratios | ratios | shadow copies compared, agreement |"
    )
    print("|---:|---:|---|---:|---|---|")
    for row in rows:
        ratios = ", ".join(f"{r:.2f}" for r in row["ratios"])
        agreement = row["shadow_agreement"]
        print(
            f"| {row['fraction']:g} | {row['rate']:,.0f} | {row['p99_off_ms']:.2f} / {row['p99_on_ms']:.2f} | "
            f"**{row['median_ratio']:.2f}** | {ratios} | {row['shadow_comparisons']:,}, "
            f"{'-' if agreement is None else f'{agreement:.1%}'} |"
        )


if __name__ == "__main__":
    main()
