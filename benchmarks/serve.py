"""The HTTP service under load, on loopback with a real HTTP client, bounded request loops and the load average recorded.

    python benchmarks/serve.py [--run DIR] [--workers 1,2] [--repeats 3] [--seconds 20] [--requests 10000] [--clients 32] [--paced-rate 450]

Without --run it trains the quick start's loo model (sequential text+id on ml-100k `loo`) with a small budget
(--epochs, default 3) and saves it under runs/bench-serve-e<epochs>/ (reused by later runs). The service is
`transferrec.serve.serve(run, workers=N)` in its own process, as `transferrec serve --run DIR --workers N` starts it,
without access logs, for each N of --workers. The load generator is `wrk` (a C HTTP/1.1 client; `apt-get install wrk`):
client and server share the machine's 2 cores, and wrk spends a few hundredths of a millisecond of CPU per request
where a Python client (httpx) spends about 2 ms. It measures, against the issue's targets:

- one client (one keep-alive connection, `--single-seconds` each): p50 / p99 of `POST /recommend` for known users with
  the default `because` reasons and, beside it, with explain=false;
- `--clients` connections replaying `--requests` mixed requests (known users, histories, texts, and bad requests that
  must be 4xx) for `--seconds`, `--repeats` times: requests per second, p50 / p99, statuses; best and median;
- the HTTP stack alone: `GET /health` at `--clients` connections (what a request costs without the model);
- the `--requests` mixed requests once more from an httpx client that checks every answer: no 5xx, no transport
  error, each bad request a 4xx and each good one a 200;
- in process: `Recommender.recommend` p50 / p99 with and without reasons, the CPU time of `Service.recommend` per
  request of the same mix (the model's share of the server's time), and the quality of the reasons
  (`transferrec.recommend.reason_quality`).

The CPU time of the server (its process and workers) and of the client per request, the server's memory per process
(RSS and PSS: pages shared between the workers are split between them), and the load average before and after every
measurement are recorded: other people's work on the same cores slows every number here.

It writes benchmarks/serve.json and benchmarks/serve.md (--out PREFIX to write elsewhere) with the machine
(`transferrec.core.machine_info`) and the settings."""
import argparse, asyncio, json, os, random, re, resource, shutil, signal, statistics, subprocess, sys, tempfile, time
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import numpy as np
import httpx
from transferrec.core import atomic_write, free_port, machine_info
from transferrec.recommend import Recommender, reason_quality
from transferrec.serve import RecommendRequest, Service

ROOT = Path(__file__).resolve().parent.parent
QUIET_LOAD = 2.5   # a verdict only from a measurement whose 1-minute load average before it was below this
TARGETS = {'single_p50_ms': 5.0, 'concurrent_rps': 400.0, 'concurrent_p99_ms': 100.0, 'server_errors': 0,
           'in_process_p50_ms': 5.0, 'faithful': 0.9}
TEXTS = ['space adventures with robots and rebels', 'a haunted house and a family in danger', 'romantic comedy in new york',
         'gritty crime drama about the mafia', 'animated film for children with talking animals', 'a war film about soldiers',
         'a western with outlaws and a sheriff', 'documentary about music']


def percentiles(ms: list) -> dict:
    return {'p50_ms': float(np.percentile(ms, 50)), 'p99_ms': float(np.percentile(ms, 99)), 'n': len(ms)}


def cpu_seconds(pid: int) -> float:
    "CPU time (user + system) of a process and its children (the worker processes), from /proc; 0 where /proc is missing."
    def own(p):
        try: f = Path(f'/proc/{p}/stat').read_text().rsplit(')', 1)[1].split()
        except OSError: return 0.0, None
        return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'), int(f[1])
    total = own(pid)[0]
    for d in Path('/proc').glob('[0-9]*'):
        t, parent = own(d.name)
        if parent == pid: total += t
    return total


def memory_mb(pid: int) -> list:
    "RSS and PSS (shared pages split between their users) in MB of a process and of each child (the workers), from /proc."
    def one(p):
        try: fields = dict(line.split(':', 1) for line in Path(f'/proc/{p}/smaps_rollup').read_text().splitlines()[1:])
        except OSError: return None
        return {'pid': int(p), 'rss_mb': int(fields['Rss'].split()[0]) / 1024, 'pss_mb': int(fields['Pss'].split()[0]) / 1024}
    kids = []
    for d in Path('/proc').glob('[0-9]*'):
        try: parent = int(Path(f'/proc/{d.name}/stat').read_text().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError): continue
        if parent == pid: kids.append(d.name)
    return [m for m in [one(pid), *map(one, kids)] if m is not None]


def train_run(epochs: int) -> Path:
    "The quick start's loo model (sequential text+id, ml-100k) with a small budget, saved once and reused."
    from transferrec.data import load_movielens, split
    out = ROOT/'runs'/f'bench-serve-e{epochs}'
    if (out/'config.json').exists(): return out
    print(f'training sequential text+id on ml-100k loo ({epochs} epochs) -> {out}', flush=True)
    rec = Recommender('sequential', item_repr='text+id', epochs=epochs, patience=3, seed=0, progress=False)
    rec.fit(split(load_movielens('ml-100k'), 'loo'))
    return rec.save(out)


def start_server(run: Path, port: int, workers: int, wait: float=600.0) -> subprocess.Popen:
    code = (f"from transferrec.serve import serve; serve({str(run)!r}, port={port}, workers={workers}, "
            "access_log=False, log_level='warning')")
    proc = subprocess.Popen([sys.executable, '-c', code])
    end = time.monotonic() + wait
    while time.monotonic() < end:
        if proc.poll() is not None: raise SystemExit(f'the server exited with status {proc.returncode}')
        try:
            if httpx.get(f'http://127.0.0.1:{port}/ready', timeout=5).status_code == 200: return proc
        except httpx.TransportError: pass
        time.sleep(0.2)
    proc.kill(); raise SystemExit(f'the server was not ready within {wait:g} s')


def mixed_requests(rec_users: list, histories: list, items: list, n: int, seed: int=0) -> list:
    "n requests: 40% known users, 25% histories, 20% texts, 15% bad ones (each must get a 4xx)."
    rng = random.Random(seed)
    bad = [('json', {'user_id': -12345}), ('json', {'history': []}), ('json', {'user_id': rec_users[0], 'k': 0}),
           ('json', {'history': [items[0], -777]}), ('content', b'{"user_id": '), ('json', {'user_id': 1, 'text': 'x'})]
    out = []
    for _ in range(n):
        x = rng.random()
        if x < 0.40: out.append(('user', 'json', {'user_id': rng.choice(rec_users), 'k': 10}))
        elif x < 0.65:
            h = rng.choice(histories)
            out.append(('history', 'json', {'history': h[-rng.randint(5, 20):], 'k': 10}))
        elif x < 0.85: out.append(('text', 'json', {'text': rng.choice(TEXTS), 'k': 10}))
        else: out.append(('bad', *rng.choice(bad)))
    return out


WRK_LUA = r"""
-- replays the requests of WRK_REQUESTS (one "kind<TAB>JSON body" a line) in order, or GETs WRK_PATH; counts the statuses
local reqs, n = {}, 0
if os.getenv("WRK_REQUESTS") then
  for line in io.lines(os.getenv("WRK_REQUESTS")) do
    local kind, body = line:match("^(%w+)\t(.*)$")
    n = n + 1
    reqs[n] = wrk.format("POST", "/recommend", {["Content-Type"] = "application/json"}, body)
  end
else n = 1; reqs[1] = wrk.format("GET", os.getenv("WRK_PATH")) end
local threads, i = {}, 0
statuses = {}
setup = function(thread) table.insert(threads, thread) end
request = function() i = i % n + 1; return reqs[i] end
-- WRK_PAUSE_MS: each connection pauses a random 0..2x that long before its next request (paced clients, not a flood)
local pause = tonumber(os.getenv("WRK_PAUSE_MS") or "0")
if pause > 0 then delay = function() return math.random() * 2 * pause end end
response = function(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
done = function(summary, latency, requests)
  local total, st, parts = {}, {}, {}
  for _, t in ipairs(threads) do for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end end
  for k, v in pairs(total) do st[#st + 1] = string.format('"%d": %d', k, v) end
  for _, p in ipairs({50, 90, 99, 99.9}) do parts[#parts + 1] = string.format('"p%s_ms": %.3f', p, latency:percentile(p) / 1000) end
  io.write(string.format('WRK {"requests": %d, "seconds": %.3f, "socket_errors": %d, "timeouts": %d, "mean_ms": %.3f, "statuses": {%s}, %s}\n',
    summary.requests, summary.duration / 1e6, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, latency.mean / 1000, table.concat(st, ", "), table.concat(parts, ", ")))
end
"""


def load_avg() -> list: return [round(x, 2) for x in os.getloadavg()]


def wrk(url: str, pid: int, requests: list|None, connections: int, seconds: float, path: str='/health',
        rate: float|None=None) -> dict:
    """`connections` keep-alive connections of wrk (one thread) for `seconds`, replaying `requests` (or GET `path`): latency,
    rate, statuses, CPU. Without `rate` each connection sends its next request as soon as it has an answer (a flood: the
    latency is queueing at full load); with `rate` each pauses `connections / rate` s on average first, so the clients
    together offer about `rate` requests/s, a little less by their response times."""
    with tempfile.TemporaryDirectory() as tmp:
        script, env = Path(tmp)/'mixed.lua', {**os.environ, 'WRK_PATH': path}
        if rate: env['WRK_PAUSE_MS'] = f'{1000 * connections / rate:.3f}'
        script.write_text(WRK_LUA)
        if requests is not None:
            (Path(tmp)/'requests.tsv').write_text(''.join(f"{kind}\t{body if isinstance(body, str) else json.dumps(body)}\n" for kind, body in requests))
            env['WRK_REQUESTS'] = str(Path(tmp)/'requests.tsv')
        before, c0, client0 = load_avg(), cpu_seconds(pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run([shutil.which('wrk'), '-t1', f'-c{connections}', f'-d{seconds:g}s', '--timeout', '30s', '-s', str(script), url],
                             env=env, capture_output=True, text=True, timeout=seconds + 120)
        server, client1 = cpu_seconds(pid) - c0, resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((l for l in out.stdout.splitlines() if l.startswith('WRK ')), None)
    if line is None: raise SystemExit(f'wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}')
    r = json.loads(line[4:])
    n = max(r['requests'], 1)
    client = (client1.ru_utime - client0.ru_utime) + (client1.ru_stime - client0.ru_stime)
    return {**r, 'rps': r['requests'] / r['seconds'], 'connections': connections, 'server_cpu_ms_per_request': server / n * 1000,
            'client_cpu_ms_per_request': client / n * 1000, 'server_errors': sum(v for k, v in r['statuses'].items() if int(k) >= 500),
            'load_before': before, 'load_after': load_avg()}


def as_lines(requests: list) -> list:
    "(kind, how, body) requests as (kind, JSON text) lines for wrk."
    return [(kind, body.decode() if how == 'content' else json.dumps(body)) for kind, how, body in requests]


async def concurrent_clients(url: str, requests: list, clients: int) -> dict:
    "`clients` connections, each sending its next request as soon as the previous one is answered."
    lat, statuses, kinds, errors = [], {}, {}, []
    queue = iter(requests)
    async def worker(client):
        for kind, how, body in queue:
            t0 = time.perf_counter()
            try:
                r = await (client.post('/recommend', json=body) if how == 'json' else
                           client.post('/recommend', content=body, headers={'Content-Type': 'application/json'}))
            except httpx.HTTPError as e: errors.append(f'{type(e).__name__}: {e}'); continue
            ms = (time.perf_counter() - t0) * 1000
            lat.append(ms); kinds.setdefault(kind, []).append(ms)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if (kind == 'bad') != (400 <= r.status_code < 500): errors.append(f'{kind} request answered {r.status_code}: {r.text[:200]}')
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {'requests': len(requests), 'seconds': wall, 'rps': len(requests) / wall, **percentiles(lat),
            'by_kind': {k: percentiles(v) for k, v in sorted(kinds.items())}, 'statuses': {str(k): v for k, v in sorted(statuses.items())},
            'server_errors': sum(v for k, v in statuses.items() if k >= 500), 'wrong_answers': len(errors), 'first_errors': errors[:5]}


def in_process(rec, n: int) -> dict:
    "Recommender.recommend latency (ms) in this process, with and without reasons, alternating; the load before and after."
    before, users, lat = load_avg(), rec.user_ids, {'explain=True': [], 'explain=False': []}
    for u in users[:10]: rec.recommend(user_id=u); rec.recommend(user_id=u, explain=False)
    for j in range(n):
        u = users[(j * 7) % len(users)]
        for flag in ((True, False) if j % 2 == 0 else (False, True)):
            t0 = time.perf_counter(); rec.recommend(user_id=u, k=10, explain=flag)
            lat[f'explain={flag}'].append((time.perf_counter() - t0) * 1000)
    return {**{k: percentiles(v) for k, v in lat.items()}, 'load_before': before, 'load_after': load_avg()}


def service_mix(rec, requests: list) -> dict:
    "CPU ms per request of `Service.recommend` (the model and the JSON rows, no HTTP) over the mixed requests, by kind."
    service = Service(rec).start(); service.loading.result()
    cpu = {}
    for kind, how, body in requests:
        t0 = time.thread_time()
        try: service.recommend(RecommendRequest.model_validate_json(body if how == 'content' else json.dumps(body)))
        except Exception: pass   # the bad requests fail validation or in the model's checks, as over HTTP
        cpu.setdefault(kind, []).append((time.thread_time() - t0) * 1000)
    service.stop()
    every = [x for v in cpu.values() for x in v]
    return {'cpu_ms_per_request': float(np.mean(every)), 'by_kind': {k: float(np.mean(v)) for k, v in sorted(cpu.items())}, 'n': len(every)}


def best_median(runs: list) -> dict:
    "The best and the median run of repeated measurements (best: the highest rate; lowest p50 / p99)."
    out = {}
    for key, best in (('rps', max), ('p50_ms', min), ('p99_ms', min), ('server_cpu_ms_per_request', min), ('client_cpu_ms_per_request', min)):
        values = [r[key] for r in runs]
        out[key] = {'best': best(values), 'median': statistics.median(values), 'all': values}
    return out


def measure(run: Path, workers: int, users: list, mixed: list, a) -> dict:
    "One server with `workers` processes: one client, `--repeats` runs at `--clients`, the HTTP stack alone, memory."
    port = free_port()
    proc = start_server(run, port, workers)
    url = f'http://127.0.0.1:{port}'
    try:
        single_user = [('user', {'user_id': users[(j * 7) % len(users)], 'k': 10}) for j in range(len(users))]
        wrk(url, proc.pid, as_lines(mixed[:2000]), 4, 3)                                         # warm-up
        single = {}
        for flag in (True, False):
            lines = [(k, json.dumps({**b, 'explain': flag})) for k, b in single_user]
            single[f'explain={str(flag).lower()}'] = wrk(url, proc.pid, lines, 1, a.single_seconds)
        concurrent = [wrk(url, proc.pid, as_lines(mixed), a.clients, a.seconds) for _ in range(a.repeats)]
        paced = [wrk(url, proc.pid, as_lines(mixed), a.clients, a.seconds, rate=a.paced_rate) for _ in range(a.repeats)]
        stack = wrk(url, proc.pid, None, a.clients, 5, '/health')
        memory = memory_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(60)
        except subprocess.TimeoutExpired: proc.kill()
    return {'workers': workers, 'single': single, 'concurrent': concurrent, 'summary': best_median(concurrent),
            'paced': paced, 'paced_summary': best_median(paced),
            'http_stack': stack, 'memory': memory}


def checked(run: Path, requests: list, clients: int) -> dict:
    "The mixed requests once, from httpx clients that check every answer (1 worker)."
    port = free_port()
    proc = start_server(run, port, 1)
    try:
        before, c0 = load_avg(), cpu_seconds(proc.pid)
        out = asyncio.run(concurrent_clients(f'http://127.0.0.1:{port}', requests, clients))
        out['server_cpu_ms_per_request'] = (cpu_seconds(proc.pid) - c0) / len(requests) * 1000
        out['load_before'], out['load_after'] = before, load_avg()
    finally:
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(60)
        except subprocess.TimeoutExpired: proc.kill()
    return out


def verdict(ok: bool, load: list|None) -> str:
    "met / not met, from a measurement that started on a quiet machine; else what it measured, with no verdict."
    if load is not None and load[0] >= QUIET_LOAD: return f"{'reached' if ok else 'missed'}, but no verdict: load {load[0]:.1f} before the benchmark"
    return 'met' if ok else 'not met'


def report(res: dict) -> str:
    t, q, ip, chk = TARGETS, res['reasons'], res['in_process'], res['checked']
    met = lambda ok: 'met' if ok else 'not met'
    start = res['load_before']   # the benchmark adds load of its own: the machine's own is the load before it began
    n = res['settings']['clients']
    rows = []
    for c in res['configs']:
        w, s, m = c['workers'], c['single'], c['summary']
        one, off = s['explain=true'], s['explain=false']
        rows += [(f"{w} worker(s), 1 client: POST /recommend, known user, with reasons, p50 / p99", f"{one['p50_ms']:.2f} / {one['p99_ms']:.2f} ms (load {one['load_before'][0]})", f"p50 < {t['single_p50_ms']:g} ms", verdict(one['p50_ms'] < t['single_p50_ms'], start)),
                 (f"{w} worker(s), 1 client: explain=false, p50 / p99", f"{off['p50_ms']:.2f} / {off['p99_ms']:.2f} ms (load {off['load_before'][0]})", '', ''),
                 (f"{w} worker(s), 1 client: CPU per request, server / client", f"{one['server_cpu_ms_per_request']:.2f} / {one['client_cpu_ms_per_request']:.2f} ms", '', ''),
                 (f"{w} worker(s), {n} clients, mixed: requests/s, median (best) of {len(c['concurrent'])}", f"{m['rps']['median']:.0f} ({m['rps']['best']:.0f}) (load {min(r['load_before'][0] for r in c['concurrent'])}-{max(r['load_before'][0] for r in c['concurrent'])})", f">= {t['concurrent_rps']:g}", verdict(m['rps']['median'] >= t['concurrent_rps'], start)),
                 (f"{w} worker(s), {n} clients: p50 / p99, median (best)", f"{m['p50_ms']['median']:.1f} ({m['p50_ms']['best']:.1f}) / {m['p99_ms']['median']:.1f} ({m['p99_ms']['best']:.1f}) ms", f"p99 < {t['concurrent_p99_ms']:g} ms", verdict(m['p99_ms']['median'] < t['concurrent_p99_ms'], start)),
                 (f"{w} worker(s), {n} clients paced at {res['settings']['paced_rate']:g} requests/s offered: requests/s served, p50 / p99, median of {len(c['paced'])}",
                  f"{c['paced_summary']['rps']['median']:.0f}, {c['paced_summary']['p50_ms']['median']:.1f} / {c['paced_summary']['p99_ms']['median']:.1f} ms (load {min(r['load_before'][0] for r in c['paced'])}-{max(r['load_before'][0] for r in c['paced'])})",
                  f">= {t['concurrent_rps']:g} with p99 < {t['concurrent_p99_ms']:g} ms",
                  verdict(c['paced_summary']['rps']['median'] >= t['concurrent_rps'] and c['paced_summary']['p99_ms']['median'] < t['concurrent_p99_ms'], start)),
                 (f"{w} worker(s), {n} clients: CPU per request, server / client (median)", f"{m['server_cpu_ms_per_request']['median']:.2f} / {m['client_cpu_ms_per_request']['median']:.2f} ms", '', ''),
                 (f"{w} worker(s), GET /health at {n} clients (the HTTP stack alone): requests/s; server CPU per request", f"{c['http_stack']['rps']:.0f}; {c['http_stack']['server_cpu_ms_per_request']:.2f} ms", '', '')]
    rows += [(f"{chk['requests']:,} mixed requests, each answer checked (httpx, {n} clients, 1 worker): 5xx, transport errors or wrong classes", f"{chk['server_errors']}, {chk['wrong_answers']}", '0', met(chk['server_errors'] == 0 and chk['wrong_answers'] == 0)),
             ('in process: Recommender.recommend with reasons, p50 / p99', f"{ip['explain=True']['p50_ms']:.2f} / {ip['explain=True']['p99_ms']:.2f} ms (load {ip.get('load_before', ['?'])[0]})", f"p50 < {t['in_process_p50_ms']:g} ms", verdict(ip['explain=True']['p50_ms'] < t['in_process_p50_ms'], start)),
             ('in process: explain=False, p50 / p99', f"{ip['explain=False']['p50_ms']:.2f} / {ip['explain=False']['p99_ms']:.2f} ms", '', ''),
             ('in process: Service.recommend over the mix (model + JSON rows), CPU per request', f"{res['service_mix']['cpu_ms_per_request']:.2f} ms", '', ''),
             (f"reasons: removing them lowers the score ({q['recommendations']:,} recommendations, {q['with reasons']:.0%} with reasons)", f"{q['faithful']:.1%}", f">= {t['faithful']:.0%}", met(q['faithful'] >= t['faithful'])),
             ('reasons: empty `why` cells', f"{q['empty why']}", '0', met(q['empty why'] == 0)),
             ('reasons: share a genre with the item, vs a random history item', f"{q['reason shares genres']:.1%} vs {q['random history item shares genres']:.1%}", 'clearly more', met(q['reason shares genres'] > q['random history item shares genres'] + 0.05))]
    lines = ['# HTTP service benchmark', '', f"Run: {res['settings']['run']} ({res['settings']['model']}). Server: "
             f"`transferrec.serve.serve` with 1 and more worker processes (forked after loading the run, so they share it), loopback, "
             f"no access log. Load generator: {res['settings']['client']}, one thread, keep-alive connections; {n} clients replay "
             f"{res['settings']['requests']:,} mixed requests ({res['settings']['mix']}) for {res['settings']['seconds']:g} s, "
             f"{res['settings']['repeats']} times. The {len(TEXTS)} texts of the mix repeat, so after the first time each is answered "
             "from the recommender's cache of text scores.", '',
             '**The machine is shared**: other people run jobs on the same 2 cores, so every time here is inflated by their load '
             '(the load average before and after each measurement is below and in serve.json; a load above 2 means the cores were '
             'oversubscribed). The key measurement is repeated and given as median (best). The speed targets are called met or not met only '
             f'when the 1-minute load average before the benchmark began was below {QUIET_LOAD:g} (it was {res["load_before"][0]}); '
             'on a busier machine a row says whether the number reached the target and gives no verdict.', '',
             '| measure | value | target | |', '| --- | --- | --- | --- |'] + [f'| {a} | {b} | {c} | {d} |' for a, b, c, d in rows]
    lines += ['', '## Where the time goes', '',
              f"Server CPU per request of the mix, in process (`Service.recommend`: model, reasons, JSON rows): {res['service_mix']['cpu_ms_per_request']:.2f} ms "
              '(by kind: ' + ', '.join(f"{k} {v:.2f}" for k, v in res['service_mix']['by_kind'].items()) + ' ms; '
              f"load {res['service_mix']['load_before']} / {res['service_mix']['load_after']}).", '']
    for c in res['configs']:
        m, st = c['summary'], c['http_stack']
        lines += [f"- {c['workers']} worker(s): server CPU per mixed request over HTTP {m['server_cpu_ms_per_request']['median']:.2f} ms, of which the HTTP stack "
                  f"(uvicorn, FastAPI, GET /health) {st['server_cpu_ms_per_request']:.2f} ms; the client (wrk) {m['client_cpu_ms_per_request']['median']:.2f} ms. "
                  f"2 cores give at most {2000 / max(m['server_cpu_ms_per_request']['median'] + m['client_cpu_ms_per_request']['median'], 1e-9):.0f} requests/s at that cost, "
                  f"{'one core (one worker: one interpreter)' if c['workers'] == 1 else 'both cores'} at most "
                  f"{(1000 if c['workers'] == 1 else 2000) / max(m['server_cpu_ms_per_request']['median'], 1e-9):.0f}.",
                  '  Runs (requests/s, p50 / p99 ms, load before -> after): ' + '; '.join(
                      f"{r['rps']:.0f}, {r['p50_ms']:.1f} / {r['p99_ms']:.1f}, {r['load_before'][0]} -> {r['load_after'][0]}" for r in c['concurrent']),
                  '  Memory (MB, RSS / PSS, the serving process then its workers): ' + ', '.join(f"{x['rss_mb']:.0f} / {x['pss_mb']:.0f}" for x in c['memory']) +
                  f"; PSS in all {sum(x['pss_mb'] for x in c['memory']):.0f} MB."]
    lines += ['', f"Checked pass: statuses {chk['statuses']}, {chk['rps']:.0f} requests/s with httpx (which spends most of the CPU), "
              f"latency by kind (p50 / p99 ms): " + ', '.join(f"{k} {v['p50_ms']:.1f} / {v['p99_ms']:.1f}" for k, v in chk['by_kind'].items()) +
              f"; load {chk['load_before']} / {chk['load_after']}.", '',
              f"Load average at the start / end of the whole benchmark: {res['load_before']} / {res['load_after']}.", '',
              f"Machine: {res['machine']['platform']}, {res['machine']['cpu_count']} CPUs, Python {res['machine']['python']}, "
              f"torch {res['machine']['torch']}, transferrec {res['machine']['transferrec']}.", '']
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', help='a run folder to serve (default: train the quick start loo model)')
    p.add_argument('--epochs', type=int, default=3, help='training epochs when no --run is given')
    p.add_argument('--workers', default='1,2', help='server worker processes, one measurement each: e.g. 1,2')
    p.add_argument('--requests', type=int, default=10_000, help='mixed requests: replayed by wrk, sent once by the checking client')
    p.add_argument('--clients', type=int, default=32, help='concurrent clients (keep-alive connections)')
    p.add_argument('--seconds', type=float, default=20, help='length of each concurrent run')
    p.add_argument('--repeats', type=int, default=3, help='concurrent runs per worker count')
    p.add_argument('--paced-rate', type=float, default=450, help='requests/s the paced clients offer together (a little above '
                   'the 400/s target: the pause of each client comes on top of its own response time)')
    p.add_argument('--single-seconds', type=float, default=8, help='length of each one-client run')
    p.add_argument('--reason-users', type=int, default=300, help='users whose recommendations check the reasons')
    p.add_argument('--out', default=str(ROOT/'benchmarks'/'serve'), help='write PREFIX.json and PREFIX.md')
    a = p.parse_args(argv)
    if not shutil.which('wrk'): raise SystemExit('benchmarks/serve.py needs wrk, a C load generator: apt-get install -y wrk')
    run = Path(a.run) if a.run else train_run(a.epochs)
    meta = json.loads((run/'config.json').read_text())
    load_before = load_avg()
    rec = Recommender.load(run)
    users = [int(u) if isinstance(u, (int, np.integer)) else u for u in rec.user_ids.tolist()]
    ids = rec.items['item_id'].to_numpy()
    histories = [ids[h].tolist() for h in rec.histories if len(h) >= 5]
    mixed = mixed_requests(users, histories, ids.tolist(), a.requests)
    configs = [measure(run, int(w), users, mixed, a) for w in a.workers.split(',')]
    check = checked(run, mixed, a.clients)
    mix_before = load_avg()
    mix = {**service_mix(rec, mixed[:2000]), 'load_before': mix_before, 'load_after': load_avg()}
    res = {'settings': {'run': str(run), 'model': f"{meta['strategy']} {meta['settings'].get('item_repr', '')}, "
                        f"{meta['data']['dataset'] if meta.get('data') else '?'} {meta['data']['protocol'] if meta.get('data') else ''}, "
                        f"{len(meta['history'])} epochs", 'requests': a.requests, 'clients': a.clients, 'seconds': a.seconds,
                        'repeats': a.repeats, 'single_seconds': a.single_seconds, 'workers': [c['workers'] for c in configs], 'k': 10,
                        'client': ' '.join((lambda o: o.stdout + o.stderr)(subprocess.run(['wrk', '-v'], capture_output=True, text=True)).split()[:2]),
                        'paced_rate': a.paced_rate, 'mix': '40% known user, 25% history, 20% text, 15% bad'},
           'machine': machine_info(), 'load_before': load_before, 'configs': configs, 'checked': check, 'service_mix': mix,
           'in_process': in_process(rec, 200), 'targets': TARGETS, 'quiet_load': QUIET_LOAD,
           'reasons': reason_quality(rec, np.random.default_rng(0).choice(len(rec.user_ids), min(a.reason_users, len(rec.user_ids)), replace=False))}
    res['load_after'] = load_avg()
    out = Path(a.out)
    with atomic_write(out.with_suffix('.json'), 'w') as f: json.dump(res, f, indent=2)
    with atomic_write(out.with_suffix('.md'), 'w') as f: f.write(report(res))
    print(report(res))
    bad = check['server_errors'] or check['wrong_answers'] or any(r['server_errors'] for c in configs for r in c['concurrent'])
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
