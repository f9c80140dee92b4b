"""Drive a server with ``wrk`` (Debian's, 1 thread) and read its numbers from a Lua ``done`` hook.

The Lua script is generated per request: the body is embedded byte for byte (so the V2 binary
extension works), headers are fixed, and ``done`` prints one JSON line with the counts and
latency percentiles wrk recorded. No ``response`` hook is defined, so wrk keeps its fast path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from bench.models import Request

_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  local n = math.max(summary.requests, 1)
  -- Rejected (non-2xx) answers are assumed to be the fastest ones: the admitted requests' p99 is
  -- then the overall percentile at rejected + 0.99 * (1 - rejected).
  local rejected = e.status / n
  local q = 100 * (rejected + 0.99 * (1 - rejected))
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"admitted_p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, latency:percentile(q)))
end
"""


def _lua_string(data: bytes) -> str:
    out = []
    for byte in data:
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


# Open loop: requests leave on a fixed schedule (one every 1000/rate ms), whatever the answers do.
# wrk is closed-loop per connection, so the schedule is kept by a pool of connections: each one,
# when its answer arrives, claims the next free slot and waits for it (``delay``, wrk's own hook;
# whole milliseconds, so a request leaves up to 1 ms early, the rate over a second is exact). When
# every connection is busy the schedule slips and is caught up later; the achieved rate is reported.
# LuaJIT's ffi reads CLOCK_MONOTONIC (os.clock is CPU time). The first request on each connection
# leaves at once (wrk does not ask ``delay`` for it): a burst as large as the pool at the start.
_OPEN_LOOP = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local now_ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, now_ts)
  return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end
local next_slot = nil
function delay()
  local now = now_ms()
  if next_slot == nil then next_slot = now end
  next_slot = next_slot + INTERVAL_MS
  local wait = next_slot - now
  if wait < 0 then return 0 end
  return wait
end
"""


def lua_script(request: Request, rate: float | None = None) -> str:
    """The wrk script for ``request``; with ``rate`` (req/s), an open-loop schedule (see ``_OPEN_LOOP``)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(request.body)}"]
    lines += [f'wrk.headers["{name}"] = {_lua_string(value.encode())}' for name, value in request.headers.items()]
    schedule = "" if rate is None else _OPEN_LOOP.replace("INTERVAL_MS", repr(1000.0 / rate))
    return "\n".join(lines) + "\n" + schedule + _DONE


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    base_url: str, request: Request, script: Path, connections: int, seconds: float, rate: float | None = None
) -> dict[str, float]:
    """One wrk run; returns req/s, 2xx req/s, p50/p99 (ms), admitted p99, non-2xx and socket errors.

    With ``rate`` the load is open-loop at that many requests per second, ``connections`` being the
    pool that carries it (``script`` must then be a fresh path per rate).
    """
    if not script.is_file():
        script.write_text(lua_script(request, rate))
    if not base_url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load tests target 127.0.0.1 only, not {base_url}")
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        base_url + request.path,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in completed.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stdout}{completed.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    duration = raw["duration_us"] / 1e6
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "connections": connections,
        "seconds": duration,
        "requests": raw["requests"],
        "rps": raw["requests"] / duration,
        "ok_rps": (raw["requests"] - raw["status"]) / duration,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "admitted_p99_ms": raw["admitted_p99_us"] / 1000,
        "non2xx": raw["status"],
        "socket_errors": socket_errors,
        "timeouts": raw["timeout"],
    }
