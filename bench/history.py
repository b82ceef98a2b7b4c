#!/usr/bin/env python3
"""Benchmark: the call history (GET /history, its filters, a call's page, the CSV) at 1 000 and 1 000 000 calls.

    .venv/bin/python bench/history.py [--sizes 1000,1000000] [--repeat 40] [--warmup 5] [--keep] [--quick]

For each size: a fresh instance folder; 10 agents and a supervisor (auth.create_agent, what `flask
agents create` runs); the history filled with that many calls by dialer/generate.py's generate()
(what `flask calls generate N` runs: spread over all agents and the last 365 days, seed = the
size, so a run can be repeated). Then the README's production command (gunicorn -c
gunicorn.conf.py app:app, one gevent worker, Twilio mode with made-up credentials: the history
never calls Twilio) on a free port; one agent and the supervisor sign in through /login, each
with one persistent requests.Session (keep-alive). Each kind of request below is made --warmup
times, then --repeat times, the kinds taking turns in a rotating order; full pages (a bookmark or
a reload), not htmx fragments:
  page            GET /history (the agent's calls; the supervisor's: everyone's)
  page 2          the "Older calls" link (rel="next", its keyset cursor) of that first page
  search few      ?q=<7 digits of one of the agent's numbers> (a handful of calls match)
  search medium   ?q=794601 (020 7946 01xx: 3.5% of the calls; 35 000 at a million, more than the
                  trigram index is used for, so the newest-first scan looks for them): not in the
                  issue's list, a harder digit search
  search many     ?q=7946 (the London drama range: about a third of all calls)
  filter missed   supervisor: ?outcome=missed&from=<3 months ago>&to=<1 month ago> (local days)
  filter agent    supervisor: ?agent=<the agent>&outcome=talked
  call page       GET /calls/<id>, a random call of the agent each time
Times are taken at the client over localhost (server time + about 1 ms), unless the response
carries a Server-Timing header, which is then used instead; the summary says which.
CSV export: if GET /history.csv answers 404 it says "not built yet" and skips. Otherwise the
supervisor downloads the CSV of a date range holding min(100 000, size / 10) calls (found by
counting in the database), streamed; the worker's RSS (/proc/<pid>/status VmRSS) is sampled every
50 ms meanwhile: idle RSS, peak, the difference, rows and seconds.

The summary prints p50/p95 per kind at each size and, for the largest size against the smallest,
the issue's targets: p95 <= 50 ms and <= 2x its own p95 at the smallest size; the CSV's peak
within 20 MB of the idle worker. A million calls take some 80-120 s to generate and about 3 GB
of disk in the temporary folder (it checks the free space first, and deletes each size's folder
when done unless --keep). --quick runs sizes 1000,20000 with fewer repeats. The client runs on the
same machine; run nothing heavy alongside.
"""
import argparse
import codecs
import csv
import html
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server import ROOT, Server, free_port, pct, rss_kb, sign_in, twilio_env  # noqa: E402

sys.path.insert(0, ROOT)
AGENTS = 10
TARGETS = {"p95_ms": 50.0, "ratio": 2.0, "csv_mb": 20.0}
BYTES_PER_CALL = 3300  # on disk, calls + events + indexes (README: 1 000 000 calls, about 3 GB)
NEXT = re.compile(r'<a href="([^"]+)" rel="next">')
ROW = re.compile(r'<tr data-call-id="\d+"')
MEDIUM = "794601"  # 020 7946 01xx: some 3.5% of the generated calls, 35 000 at a million (see kinds_for)
TIMING = re.compile(r'([\w.-]+)(?:;[^,]*?dur=([\d.]+))?')


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def git_state():
    try:
        head = subprocess.run(["git", "-C", ROOT, "log", "-1", "--oneline"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain"], capture_output=True, text=True).stdout
    except OSError:
        return "not a git checkout"
    changed = [line[3:] for line in dirty.splitlines()]
    return (head if len(head) <= 70 else head[:69] + "…") + "; " + ("clean" if not changed else f"working tree changed: {', '.join(changed)}")


# --- the server ------------------------------------------------------------------------------

def server_ms(response):
    """The server's own time from a Server-Timing header (a `total`/`app` metric, else the largest), or None."""
    header = response.headers.get("Server-Timing")
    if not header:
        return None
    durations = {}
    for part in header.split(","):
        found = TIMING.match(part.strip())
        if found and found.group(2):
            durations[found.group(1)] = float(found.group(2))
    for name in ("total", "app"):
        if name in durations:
            return durations[name]
    return max(durations.values()) if durations else None


# --- one size --------------------------------------------------------------------------------

def prepare(size, instance, env):
    """Agents and `size` generated calls in a fresh instance; what the requests need, from the database."""
    os.environ.update(env)  # create_app reads the same settings as the server
    from dialer import auth, create_app
    from dialer.db import connect
    from dialer.generate import generate
    from dialer.history import _utc_bound
    app = create_app(instance_path=instance)  # runs the migrations on the empty database
    cfg = app.config
    zone = ZoneInfo(cfg["TIME_ZONE"])
    db = connect(cfg["DATABASE"])
    password = "bench-" + secrets.token_urlsafe(18)
    users = [f"agent{i:02d}" for i in range(AGENTS)] + ["supervisor"]
    ids = {}
    with app.app_context():
        for name in users:
            ids[name] = auth.create_agent(db, name, password, "supervisor" if name == "supervisor" else "agent")["id"]
    agents = [(ids[name], name) for name in users[:AGENTS]]
    started = time.monotonic()

    def progress(calls, events):
        if calls % 200_000 == 0 and calls < size:
            print(f"  {calls:,} of {size:,} calls, {events:,} events ({time.monotonic() - started:.0f} s)", flush=True)

    calls, events = generate(db, size, agents, seed=size, zone=zone, account_sid=cfg["TWILIO_ACCOUNT_SID"],
                             caller_id=cfg["TWILIO_CALLER_ID"], progress=progress)
    info = {"generate_s": time.monotonic() - started, "calls": calls, "events": events, "password": password,
            "agent": users[0], "agent_id": ids[users[0]]}
    q = db.execute  # read what the requests need, and how many rows each should find
    agent_id = ids[users[0]]
    info["call_ids"] = [row[0] for row in q("SELECT id FROM calls WHERE agent_id = ? ORDER BY random() LIMIT 500",
                                            [agent_id]).fetchall()]
    number = q("SELECT customer_number FROM calls WHERE agent_id = ? AND customer_number LIKE '+44203%' "
               "ORDER BY random() LIMIT 1", [agent_id]).fetchone()
    if number is None:
        number = q("SELECT customer_number FROM calls WHERE agent_id = ? ORDER BY random() LIMIT 1", [agent_id]).fetchone()
    info["few_digits"] = re.sub(r"\D", "", number[0])[-7:]
    like = f"%{info['few_digits']}%"
    info["few_all"] = q("SELECT count(*) FROM calls WHERE customer_number LIKE ?", [like]).fetchone()[0]
    info["few_agent"] = q("SELECT count(*) FROM calls WHERE agent_id = ? AND customer_number LIKE ?",
                          [agent_id, like]).fetchone()[0]
    info["many_all"] = q("SELECT count(*) FROM calls WHERE customer_number LIKE '%7946%'").fetchone()[0]
    info["medium_all"] = q(f"SELECT count(*) FROM calls WHERE customer_number LIKE '%{MEDIUM}%'").fetchone()[0]
    today = datetime.now(zone).date()
    info["from"], info["to"] = (today - timedelta(days=91)).isoformat(), (today - timedelta(days=30)).isoformat()
    info["missed_range"] = q(
        "SELECT count(*) FROM calls WHERE status = 'completed' AND dial_result IN ('no-answer', 'busy', 'failed', "
        "'canceled') AND created_at >= ? AND created_at < ?",
        [_utc_bound(info["from"], zone), _utc_bound(info["to"], zone, next_day=True)]).fetchone()[0]
    info["talked_agent"] = q("SELECT count(*) FROM calls WHERE agent_id = ? AND status = 'completed' AND "
                             "(dial_result IS NULL OR dial_result = 'completed')", [agent_id]).fetchone()[0]
    # The CSV's range: from the local day of the call `csv_target` from the newest, to today.
    target = min(100_000, max(1, size // 10))
    moment = q("SELECT created_at FROM calls ORDER BY created_at DESC LIMIT 1 OFFSET ?", [target - 1]).fetchone()[0]
    day = datetime.fromisoformat(moment).astimezone(zone).date().isoformat()
    info["csv_from"], info["csv_to"] = day, today.isoformat()
    info["csv_rows"] = q("SELECT count(*) FROM calls WHERE created_at >= ? AND created_at < ?",
                         [_utc_bound(day, zone), _utc_bound(today.isoformat(), zone, next_day=True)]).fetchone()[0]
    db.conn.close()
    return info


def kinds_for(info):
    """(name, user, path (None: a random call page), (fewest, most) table rows the response must have)."""
    few, agent = info["few_digits"], info["agent"]
    some = (1, 50)
    return [
        ("page (agent)", "agent", "/history", some),
        ("page (supervisor)", "supervisor", "/history", some),
        ("page 2 (agent)", "agent", "next:/history", some),
        ("page 2 (supervisor)", "supervisor", "next:/history", some),
        ("search few (agent)", "agent", f"/history?q={few}", (min(50, info["few_agent"]),) * 2),
        ("search few (supervisor)", "supervisor", f"/history?q={few}", (min(50, info["few_all"]),) * 2),
        (f"search medium (agent, q={MEDIUM})", "agent", f"/history?q={MEDIUM}", some),
        (f"search medium (supervisor, q={MEDIUM})", "supervisor", f"/history?q={MEDIUM}", some),
        ("search many (agent, q=7946)", "agent", "/history?q=7946", some),
        ("search many (supervisor, q=7946)", "supervisor", "/history?q=7946", some),
        ("filter missed + 2 months (supervisor)", "supervisor",
         f"/history?outcome=missed&from={info['from']}&to={info['to']}", (min(1, info["missed_range"]), 50)),
        ("filter agent + talked (supervisor)", "supervisor", f"/history?agent={agent}&outcome=talked",
         (min(1, info["talked_agent"]), 50)),
        ("call page (agent)", "agent", None, (0, 0)),
    ]


def measure_pages(base, sessions, info, args, rng):
    kinds = kinds_for(info)
    # The second pages: the rel="next" link of each first page, as a browser follows it.
    for name, user, path, _ in kinds:
        if path and path.startswith("next:"):
            first = sessions[user].get(base + path[5:], timeout=120)
            found = NEXT.search(first.text)
            if not found:
                sys.exit(f"{name}: no rel=\"next\" link on {path[5:]} ({first.status_code})")
            info[f"next {user}"] = html.unescape(found.group(1))
    times = {name: [] for name, *_ in kinds}
    source = {"server-timing": 0, "client": 0}
    problems = []
    rounds = args.warmup + args.repeat
    for r in range(rounds):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]  # every kind goes first, last, in between
        for name, user, path, (fewest, most) in order:
            if path is None:
                path = f"/calls/{rng.choice(info['call_ids'])}"
            elif path.startswith("next:"):
                path = info[f"next {user}"]
            started = time.perf_counter()
            response = sessions[user].get(base + path, timeout=120)
            elapsed = (time.perf_counter() - started) * 1000
            body = response.text
            rows = len(ROW.findall(body))
            if response.status_code != 200 or not fewest <= rows <= most:
                problems.append(f"{name}: {response.status_code}, {rows} rows for {path}")
                continue
            if r < args.warmup:
                continue
            timed = server_ms(response)
            source["server-timing" if timed is not None else "client"] += 1
            times[name].append(timed if timed is not None else elapsed)
        if r == args.warmup - 1 or (r + 1) % 10 == 0:
            print(f"  round {r + 1}/{rounds}", flush=True)
    return times, source, problems


def measure_csv(base, session, worker, info):
    """The supervisor's CSV of csv_from..csv_to, streamed, with the worker's RSS sampled every 50 ms."""
    probe = session.get(base + "/history.csv", params={"from": info["csv_to"], "to": info["csv_to"]},
                        timeout=120, stream=True)
    probe.close()
    if probe.status_code == 404:
        return {"built": False}
    time.sleep(1)
    idle = rss_kb(worker)
    samples, done = [idle], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(rss_kb(worker))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    first_byte = None
    rows, header, ids, odd = 0, None, set(), 0
    with session.get(base + "/history.csv", params={"from": info["csv_from"], "to": info["csv_to"]},
                     timeout=300, stream=True) as response:
        status, content_type = response.status_code, response.headers.get("Content-Type", "")

        def lines():
            """The body's lines, ends kept, split at LF only (requests' iter_lines also splits at a
            CR whose LF is in the next chunk, which makes a blank row)."""
            nonlocal first_byte
            decoder, pending = codecs.getincrementaldecoder("utf-8-sig")("replace"), ""
            for chunk in response.iter_content(65536):
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                pending += decoder.decode(chunk)
                *complete, pending = pending.split("\n")
                for line in complete:
                    yield line + "\n"
            pending += decoder.decode(b"", final=True)
            if pending:
                yield pending

        if status == 200:
            for record in csv.reader(lines()):
                if header is None:
                    header = record
                    continue
                rows += 1
                if record and record[0].isdigit():
                    ids.add(int(record[0]))
                else:
                    odd += 1
        else:
            first_byte = time.perf_counter() - started
            body = response.text[:300]
    seconds = time.perf_counter() - started
    time.sleep(0.2)
    done.set()
    sampler.join()
    result = {"built": True, "status": status, "content_type": content_type, "rows": rows, "header": header,
              "distinct": len(ids), "odd": odd, "expected": info["csv_rows"], "seconds": seconds, "first_byte": first_byte, "idle_kb": idle,
              "peak_kb": max(samples), "after_kb": rss_kb(worker), "samples": len(samples),
              "range": f"from={info['csv_from']}&to={info['csv_to']}"}
    if status != 200:
        result["body"] = body
    return result


def run_size(size, args, tmp):
    instance = os.path.join(tmp, f"instance-{size}")
    need = size * BYTES_PER_CALL * 1.2 + 200e6
    free = shutil.disk_usage(tmp).free
    if free < need:
        sys.exit(f"{size:,} calls need about {need / 1e9:.1f} GB in {tmp}; only {free / 1e9:.1f} GB is free "
                 "(set TMPDIR to a bigger disk)")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = twilio_env(1, instance, port)
    print(f"[{size:,}] generating {size:,} calls in {instance} ({free / 1e9:.0f} GB free) …", flush=True)
    info = prepare(size, instance, env)
    result = {"size": size, "info": info, "disk": folder_bytes(instance)}
    print(f"[{size:,}] {info['calls']:,} calls, {info['events']:,} events in {info['generate_s']:.0f} s, "
          f"{result['disk'] / 1e9:.2f} GB; starting the server …", flush=True)
    server = Server(env, os.path.join(tmp, f"server-{size}.log"))
    result["log"] = server.log_path
    try:
        started = time.monotonic()
        server.wait_healthy(timeout=600)
        result["start_s"] = time.monotonic() - started
        worker = server.workers(1)[0]
        sessions = {"agent": sign_in(base, info["agent"], info["password"]),
                    "supervisor": sign_in(base, "supervisor", info["password"])}
        print(f"[{size:,}] server up in {result['start_s']:.1f} s (worker {worker}); "
              f"{args.warmup} + {args.repeat} rounds of {len(kinds_for(info))} kinds …", flush=True)
        result["times"], result["source"], result["problems"] = measure_pages(
            base, sessions, info, args, random.Random(size))
        print(f"[{size:,}] CSV export …", flush=True)
        result["csv"] = measure_csv(base, sessions["supervisor"], worker, info)
        for session in sessions.values():
            session.close()
    finally:
        server.stop()
        result["log_problems"] = server.log_problems()
        if not args.keep:
            shutil.rmtree(instance, ignore_errors=True)
    report_size(result)
    return result


# --- the summary -----------------------------------------------------------------------------

def verdict(ok):
    return "ok" if ok else "MISSED"


def report_size(res):
    info, size = res["info"], res["size"]
    print(f"\n== {size:,} calls ({info['events']:,} events; generated in {info['generate_s']:.0f} s, "
          f"{res['disk'] / 1e9:.2f} GB on disk; server up in {res.get('start_s', float('nan')):.1f} s)")
    print(f"   matches in the database: q={info['few_digits']} {info['few_agent']} of the agent's calls, "
          f"{info['few_all']} of all; q={MEDIUM} {info['medium_all']:,}; q=7946 {info['many_all']:,}; missed {info['from']}..{info['to']} "
          f"{info['missed_range']:,}; {info['agent']} talked {info['talked_agent']:,}")
    width = max(len(name) for name in res.get("times", {})) if res.get("times") else 20
    for name, values in res.get("times", {}).items():
        print(f"   {name:<{width}}  p50 {pct(values, 50):7.1f} ms  p95 {pct(values, 95):7.1f} ms  "
              f"max {max(values) if values else float('nan'):7.1f} ms  (n={len(values)})")
    for problem in res.get("problems", [])[:10]:
        print(f"   PROBLEM {problem}")
    print(f"   CSV: {csv_line(res.get('csv'))}")
    tracebacks, errors = res.get("log_problems", (0, 0))
    print(f"   server log: {tracebacks} tracebacks, {errors} error lines ({res['log']})", flush=True)


def csv_line(c):
    if not c:
        return "not measured"
    if not c["built"]:
        return "not built yet (GET /history.csv answers 404)"
    if c["status"] != 200:
        return f"GET /history.csv?{c['range']} answered {c['status']}: {c.get('body', '')!r}"
    grew = (c["peak_kb"] - c["idle_kb"]) / 1024
    exact = c["rows"] == c["distinct"] == c["expected"] and not c["odd"]
    return (f"{c['rows']:,} rows, {c['distinct']:,} distinct call ids, {c['odd']} without one (database: "
            f"{c['expected']:,}: {'exact' if exact else 'MISMATCH'}) "
            f"for {c['range']} in {c['seconds']:.1f} s (first byte {c['first_byte'] * 1000:.0f} ms; "
            f"{c['content_type']}); worker RSS idle {c['idle_kb'] / 1024:.1f} MB, peak {c['peak_kb'] / 1024:.1f} MB "
            f"(+{grew:.1f} MB, target <= {TARGETS['csv_mb']:g}) {verdict(grew <= TARGETS['csv_mb'])}, "
            f"after {c['after_kb'] / 1024:.1f} MB ({c['samples']} samples)")


def report(results, args, wall):
    print("\n" + "=" * 100)
    print(f"bench/history.py: {git_state()}")
    print(f"server: gunicorn -c gunicorn.conf.py app:app, 1 gevent worker, Twilio mode (made-up credentials); "
          f"client: requests.Session per user on the same {os.cpu_count()}-core machine")
    sources = {k: sum(r["source"][k] for r in results if "source" in r) for k in ("server-timing", "client")}
    print("times: " + ("the responses' Server-Timing header" if sources["server-timing"] and not sources["client"]
                       else "measured at the client over localhost (no Server-Timing header): server time + ~1 ms"
                       if not sources["server-timing"] else f"mixed: {sources}"))
    if len(results) < 2 or any("times" not in r for r in results):
        return
    small, large = results[0], results[-1]
    names = list(large["times"])
    width = max(len(n) for n in names)
    head = "".join("  " + f"{r['size']:,} calls".rjust(19) for r in results)
    print(f"\n{'p50 / p95 ms':<{width}}{head}  p95 ratio  targets at {large['size']:,}: p95 <= "
          f"{TARGETS['p95_ms']:g} ms, <= {TARGETS['ratio']:g}x")
    missed = 0
    for name in names:
        cells = ""
        for r in results:
            values = r["times"][name]
            cells += f"  {pct(values, 50):8.1f} / {pct(values, 95):7.1f}"
        p95_small, p95_large = pct(small["times"][name], 95), pct(large["times"][name], 95)
        ratio = p95_large / p95_small if p95_small else float("nan")
        ok_ms, ok_ratio = p95_large <= TARGETS["p95_ms"], ratio <= TARGETS["ratio"]
        missed += not (ok_ms and ok_ratio)
        print(f"{name:<{width}}{cells}  {ratio:8.2f}x  {'ok' if ok_ms else 'MISSED'} / {'ok' if ok_ratio else 'MISSED'}")
    print(f"{len(names) - missed} of {len(names)} kinds meet both targets at {large['size']:,} calls")
    print(f"CSV at {large['size']:,} calls: {csv_line(large.get('csv'))}")
    for r in results:
        info = r["info"]
        print(f"{r['size']:>9,} calls: generated in {info['generate_s']:.0f} s, {r['disk'] / 1e9:.2f} GB, server up in "
              f"{r.get('start_s', float('nan')):.1f} s; log: {r['log_problems'][0]} tracebacks, "
              f"{r['log_problems'][1]} error lines; {len(r.get('problems', []))} bad responses")
    print(f"whole run: {wall / 60:.1f} min")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,1000000", help="numbers of calls, comma-separated, smallest first")
    parser.add_argument("--repeat", type=int, default=40, help="timed requests per kind and size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per kind first")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases: ~3 GB per million)")
    parser.add_argument("--quick", action="store_true", help="sizes 1000,20000 and 15 repeats: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeat, args.warmup = "1000,20000", min(args.repeat, 15), min(args.warmup, 3)
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    if not sizes or sizes[0] < 100:
        sys.exit("--sizes: give sizes of at least 100 calls")
    args.warmup = max(1, args.warmup)
    tmp = tempfile.mkdtemp(prefix="dialer-bench-history-")
    print(f"bench/history.py: sizes {', '.join(f'{s:,}' for s in sizes)}; {git_state()}", flush=True)
    started, results = time.monotonic(), []
    try:
        for size in sizes:
            results.append(run_size(size, args, tmp))
    finally:
        if results:
            report(results, args, time.monotonic() - started)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
