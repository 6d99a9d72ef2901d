"""The HTTP service under load, on loopback with a real HTTP client (httpx) and bounded request loops.

    python benchmarks/serve.py [--run DIR] [--requests 10000] [--clients 32] [--single 1000] [--workers 1]

Without --run it trains the quick start's loo model (sequential text+id on ml-100k `loo`) with a small budget
(--epochs, default 3) and saves it under runs/bench-serve-e<epochs>/ (reused by later runs). The service is
`transferrec.serve.serve(run)` in its own process, as `transferrec serve --run DIR` starts it, without access logs.
It measures, against the issue's targets:

- one client: p50 / p99 of `POST /recommend` for known users with the default `because` reasons (and, beside it,
  with explain=false), `--single` requests each;
- `--clients` concurrent clients: `--requests` mixed requests (known users, histories, texts, and bad requests that
  must be 4xx): requests per second, p50 / p99, and the count of 5xx answers and transport errors (must be 0);
- in process: `Recommender.recommend` p50 / p99 with and without reasons on the same run, and the quality of the
  reasons (`transferrec.recommend.reason_quality` over --reason-users users): how often removing the `because` items
  lowers the score (faithful), that no `why` is empty, and how often a reason shares a genre with the recommended
  item against a random other item of the same history (plausible).

The CPU time of the server (its process and workers) and of this client per request, and the server's memory per
process (RSS and PSS), are recorded beside them: client and server share the machine's cores.

It writes benchmarks/serve.json and benchmarks/serve.md (--out PREFIX to write elsewhere) with the machine
(`transferrec.core.machine_info`), the settings and the load average before and after."""
import argparse, asyncio, json, os, random, signal, subprocess, sys, time
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import numpy as np
import httpx
from transferrec.core import atomic_write, free_port, machine_info
from transferrec.recommend import Recommender, reason_quality

ROOT = Path(__file__).resolve().parent.parent
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


def single_client(url: str, users: list, n: int, explain: bool) -> dict:
    "One client, one request at a time: latency percentiles of known-user recommendations."
    ms = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for j in range(n):
            t0 = time.perf_counter()
            r = client.post('/recommend', json={'user_id': users[(j * 7) % len(users)], 'k': 10, 'explain': explain})
            ms.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200: raise SystemExit(f'a known-user request answered {r.status_code}: {r.text[:300]}')
    return percentiles(ms)


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
    "Recommender.recommend latency (ms) in this process, with and without reasons, alternating."
    users, lat = rec.user_ids, {'explain=True': [], 'explain=False': []}
    for u in users[:10]: rec.recommend(user_id=u); rec.recommend(user_id=u, explain=False)
    for j in range(n):
        u = users[(j * 7) % len(users)]
        for flag in ((True, False) if j % 2 == 0 else (False, True)):
            t0 = time.perf_counter(); rec.recommend(user_id=u, k=10, explain=flag)
            lat[f'explain={flag}'].append((time.perf_counter() - t0) * 1000)
    return {k: percentiles(v) for k, v in lat.items()}


def report(res: dict) -> str:
    s, c, t, q = res['single'], res['concurrent'], TARGETS, res['reasons']
    met = lambda ok: 'met' if ok else 'not met'
    rows = [('1 client: POST /recommend, known user, with reasons, p50', f"{s['explain=true']['p50_ms']:.2f} ms", f"< {t['single_p50_ms']:g} ms", met(s['explain=true']['p50_ms'] < t['single_p50_ms'])),
            ('1 client: same, p99; server CPU per request', f"{s['explain=true']['p99_ms']:.2f} ms; {s['explain=true']['server_cpu_ms_per_request']:.2f} ms", '', ''),
            ('1 client: explain=false, p50 / p99', f"{s['explain=false']['p50_ms']:.2f} / {s['explain=false']['p99_ms']:.2f} ms", '', ''),
            (f"{res['settings']['clients']} clients, {c['requests']:,} mixed requests: requests/s", f"{c['rps']:.0f}", f">= {t['concurrent_rps']:g}", met(c['rps'] >= t['concurrent_rps'])),
            (f"{res['settings']['clients']} clients: p50 / p99", f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f} ms", f"p99 < {t['concurrent_p99_ms']:g} ms", met(c['p99_ms'] < t['concurrent_p99_ms'])),
            (f"{res['settings']['clients']} clients: CPU per request, server / client", f"{c['server_cpu_ms_per_request']:.2f} / {c.get('client_cpu_ms_per_request', float('nan')):.2f} ms", '', ''),
            ('5xx answers, transport errors, bad requests not 4xx', f"{c['server_errors']}, {c['wrong_answers']}", '0', met(c['server_errors'] == 0 and c['wrong_answers'] == 0)),
            ('in process: Recommender.recommend with reasons, p50 / p99', f"{res['in_process']['explain=True']['p50_ms']:.2f} / {res['in_process']['explain=True']['p99_ms']:.2f} ms", f"p50 < {t['in_process_p50_ms']:g} ms", met(res['in_process']['explain=True']['p50_ms'] < t['in_process_p50_ms'])),
            ('in process: explain=False, p50 / p99', f"{res['in_process']['explain=False']['p50_ms']:.2f} / {res['in_process']['explain=False']['p99_ms']:.2f} ms", '', ''),
            (f"reasons: removing them lowers the score ({q['recommendations']:,} recommendations, {q['with reasons']:.0%} with reasons)", f"{q['faithful']:.1%}", f">= {t['faithful']:.0%}", met(q['faithful'] >= t['faithful'])),
            ('reasons: empty `why` cells', f"{q['empty why']}", '0', met(q['empty why'] == 0)),
            ('reasons: share a genre with the item, vs a random history item', f"{q['reason shares genres']:.1%} vs {q['random history item shares genres']:.1%}", 'clearly more', met(q['reason shares genres'] > q['random history item shares genres'] + 0.05))]
    lines = ['# HTTP service benchmark', '', f"Run: {res['settings']['run']} ({res['settings']['model']}). Server: "
             f"`transferrec.serve.serve`, {res['settings']['workers']} worker(s), loopback, no access log. Client: httpx.", '',
             '| measure | value | target | |', '| --- | --- | --- | --- |'] + [f'| {a} | {b} | {c} | {d} |' for a, b, c, d in rows]
    lines += ['', 'Latency by kind of request under load (p50 / p99 ms): ' +
              ', '.join(f"{k} {v['p50_ms']:.1f} / {v['p99_ms']:.1f}" for k, v in c['by_kind'].items()), '',
              f"Statuses: {c['statuses']}. Load average before / after: {res['load_before']} / {res['load_after']}.", '',
              'Server memory (MB, RSS / PSS, the process then its workers): ' + ', '.join(f"{m['rss_mb']:.0f} / {m['pss_mb']:.0f}" for m in res.get('memory', [])), '',
              f"Machine: {res['machine']['platform']}, {res['machine']['cpu_count']} CPUs, Python {res['machine']['python']}, "
              f"torch {res['machine']['torch']}, transferrec {res['machine']['transferrec']}.", '']
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', help='a run folder to serve (default: train the quick start loo model)')
    p.add_argument('--epochs', type=int, default=3, help='training epochs when no --run is given')
    p.add_argument('--requests', type=int, default=10_000, help='mixed requests sent by the concurrent clients')
    p.add_argument('--clients', type=int, default=32, help='concurrent clients')
    p.add_argument('--single', type=int, default=1000, help='requests of the one-client measurement (each of two settings)')
    p.add_argument('--workers', type=int, default=1, help='server worker processes')
    p.add_argument('--reason-users', type=int, default=300, help='users whose recommendations check the reasons')
    p.add_argument('--out', default=str(ROOT/'benchmarks'/'serve'), help='write PREFIX.json and PREFIX.md')
    a = p.parse_args(argv)
    run = Path(a.run) if a.run else train_run(a.epochs)
    meta = json.loads((run/'config.json').read_text())
    load_before = [round(x, 2) for x in os.getloadavg()]
    port = free_port()
    proc = start_server(run, port, a.workers)
    url = f'http://127.0.0.1:{port}'
    try:
        rec = Recommender.load(run)
        users = [int(u) if isinstance(u, (int, np.integer)) else u for u in rec.user_ids.tolist()]
        ids = rec.items['item_id'].to_numpy()
        histories = [ids[h].tolist() for h in rec.histories if len(h) >= 5]
        single_client(url, users, 50, True)                                                 # warm-up
        single = {}
        for flag in (True, False):
            c0 = cpu_seconds(proc.pid)
            single[f'explain={str(flag).lower()}'] = single_client(url, users, a.single, flag)
            single[f'explain={str(flag).lower()}']['server_cpu_ms_per_request'] = (cpu_seconds(proc.pid) - c0) / a.single * 1000
        reqs = mixed_requests(users, histories, ids.tolist(), a.requests)
        c0, client0 = cpu_seconds(proc.pid), time.process_time()
        concurrent = asyncio.run(concurrent_clients(url, reqs, a.clients))
        concurrent['server_cpu_ms_per_request'] = (cpu_seconds(proc.pid) - c0) / a.requests * 1000
        concurrent['client_cpu_ms_per_request'] = (time.process_time() - client0) / a.requests * 1000   # the load generator shares the cores
        memory = memory_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(60)
        except subprocess.TimeoutExpired: proc.kill()
    res = {'settings': {'run': str(run), 'model': f"{meta['strategy']} {meta['settings'].get('item_repr', '')}, "
                        f"{meta['data']['dataset'] if meta.get('data') else '?'} {meta['data']['protocol'] if meta.get('data') else ''}, "
                        f"{len(meta['history'])} epochs", 'requests': a.requests, 'clients': a.clients, 'single': a.single,
                        'workers': a.workers, 'k': 10, 'mix': '40% known user, 25% history, 20% text, 15% bad'},
           'machine': machine_info(), 'load_before': load_before, 'single': single, 'concurrent': concurrent, 'memory': memory,
           'in_process': in_process(rec, 200), 'targets': TARGETS,
           'reasons': reason_quality(rec, np.random.default_rng(0).choice(len(rec.user_ids), min(a.reason_users, len(rec.user_ids)), replace=False))}
    res['load_after'] = [round(x, 2) for x in os.getloadavg()]
    out = Path(a.out)
    with atomic_write(out.with_suffix('.json'), 'w') as f: json.dump(res, f, indent=2)
    with atomic_write(out.with_suffix('.md'), 'w') as f: f.write(report(res))
    print(report(res))
    return 0 if concurrent['server_errors'] == 0 and concurrent['wrong_answers'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
