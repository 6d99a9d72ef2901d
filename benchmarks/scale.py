"""Scale benchmark (`make bench`): the batch jobs of `transferrec.scale` on a 2-core machine shared with others.

    python benchmarks/scale.py [--only encode,recommend,index1m,index10m] [--quick]

  encode     encode throughput on a local Ray cluster with 1 and 2 workers; the vectors against `encode_texts`
  recommend  recommend-all for 1,000,000 synthetic users over 100,000 items (IVF-PQ index broadcast once per worker):
             time, peak memory per worker, the top-k of a sample of users against the in-process path
  index1m    IVF-PQ with exact re-scoring (nprobe x k_factor sweep), HNSW over the float32 vectors (M 32) and HNSW over
             8-bit codes of the 128 leading directions re-scored from a file on disk (M 24; ef_search sweeps) on 1,000,000
             realistic 384-d vectors, each built from shards: top-10 p50 and recall@10 vs exact on 1,000 queries
  index10m   a 10,000,000-item int8 graph (96 directions, M 32) built from shards generated one at a time (never all in
             memory), with its memory (own and mapped-file pages) and its latency with the file dropped from the page cache;
             --index10m-dir keeps it (and searches a kept one again instead of rebuilding: the build takes most of an hour)

Synthetic vectors are made from the real ml-100k MiniLM item vectors, two ways (both reported): `gaussian` draws from a
Gaussian with their mean and covariance; `real+noise` takes a real vector and adds half of such a Gaussian's spread.
Queries come from the same generator. Every timing is recorded with the load average (others use the CPUs too).
Results: benchmarks/scale.json and benchmarks/scale.md (merged: a section not run keeps its last record)."""
import argparse, gc, json, os, re, shutil, sys, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd

HERE = Path(__file__).resolve().parent
TARGETS = {'encode_speedup': 1.8, 'encode_max_abs_diff': 1e-5, 'recommend_minutes': 10, 'recommend_worker_mb': 2000,
           'index_p50_ms': 10, 'index10m_recall': 0.90, 'index1m_recall': 0.95, 'index10m_mb': 4000}

def load() -> list: return [round(x, 2) for x in os.getloadavg()]

def rss_mb() -> float: return int(re.search(r'VmRSS:\s+(\d+)', open('/proc/self/status').read()).group(1)) / 1024
def peak_mb() -> float: return int(re.search(r'VmHWM:\s+(\d+)', open('/proc/self/status').read()).group(1)) / 1024

def ray_env(tmp: Path):
    "Keep jsonschema's 9-second rfc3987_syntax import out of Ray's processes (see tests/test_scale.py)."
    stub = tmp/'stub'/'rfc3987_syntax'; stub.mkdir(parents=True, exist_ok=True)
    (stub/'__init__.py').write_text("raise ImportError('left out: slow to import')\n")
    os.environ['PYTHONPATH'] = os.pathsep.join([str(stub.parent)] + [p for p in [os.environ.get('PYTHONPATH')] if p])

# ---------------------------------------------------------------------------------------------------------------- vectors
def real_vectors() -> np.ndarray:
    "The ml-100k catalogue's MiniLM vectors (1,682 x 384; cached by encode_texts)."
    from transferrec.data import load_movielens, item_text
    from transferrec.encoders import encode_texts
    return encode_texts(item_text(load_movielens('ml-100k').items), progress=False)

class Generator:
    "Realistic synthetic vectors: `gaussian` (the real vectors' mean and covariance) or `real+noise`."
    def __init__(self, real: np.ndarray, kind: str, noise: float=0.5):
        self.real, self.kind, self.noise = real.astype(np.float32), kind, noise
        self.mean = real.mean(0).astype(np.float32)
        cov = np.cov(real.T.astype(np.float64)) + 1e-6 * np.eye(real.shape[1])
        self.L = np.linalg.cholesky(cov).astype(np.float32)
    def __call__(self, n: int, seed) -> np.ndarray:
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, self.real.shape[1]), dtype=np.float32) @ self.L.T
        if self.kind == 'gaussian': return self.mean + z
        return self.real[rng.integers(0, len(self.real), n)] + self.noise * z

def exact_truth(shards, queries: np.ndarray, k: int=10) -> np.ndarray:
    "The exact top-k item indices of the queries over shards read one at a time."
    import torch
    best_s, best_i, start, q = None, None, 0, torch.from_numpy(queries)
    for shard in shards:
        x = torch.from_numpy(shard() if callable(shard) else shard)
        s, i = torch.topk(q @ x.T, k, dim=1); i = i + start; start += len(x)
        if best_s is not None: s, pos = torch.topk(torch.cat([best_s, s], 1), k, dim=1); i = torch.gather(torch.cat([best_i, i], 1), 1, pos)
        best_s, best_i = s, i
    return best_i.numpy()

def latency(ix, qs: np.ndarray) -> dict:
    "p50 / p99 ms of one-query top-10 searches, after a warm-up."
    ix.search(qs[:3], 10); ts = []
    for q in qs:
        t = time.perf_counter(); ix.search(q[None], 10); ts.append(time.perf_counter() - t)
    return {'p50_ms': float(np.percentile(ts, 50) * 1e3), 'p99_ms': float(np.percentile(ts, 99) * 1e3), 'load': load()}

# ---------------------------------------------------------------------------------------------------------------- encode
def bench_encode(a, tmp: Path) -> dict:
    from transferrec.data import load_movielens, item_text
    from transferrec.encoders import encode_texts
    from transferrec.scale import encode_catalogue, read_vectors, connect
    base = load_movielens('ml-100k').items
    base = base.assign(text=item_text(base))[['item_id', 'text']]
    copies = [base.assign(item_id=base.item_id.astype(str) + f'-{c}', text=base.text + f' (edition {c + 1})') for c in range(a.encode_copies)]
    items = pd.concat(copies, ignore_index=True).head(400 if a.quick else None)   # a longer run: start-up and the last shard matter less
    n = len(items)
    items.to_parquet(tmp/'items.parquet')
    ray = connect(num_cpus=2)
    items.head(256).to_parquet(tmp/'warm.parquet')
    connect_warm = encode_catalogue(tmp/'warm.parquet', tmp/'warm', shard_rows=64, ray=True, workers=2, progress=False)  # start workers, load models
    runs = []
    for w in (1, 2):
        l0 = load(); done = encode_catalogue(tmp/'items.parquet', tmp/f'w{w}', shard_rows=a.encode_shard_rows, ray=True, workers=w, progress=False)
        runs.append({'workers': w, 'seconds': done['seconds'], 'texts_per_s': done['texts_per_s'], 'worker_peak_mb': done['worker_peak_mb'],
                     'load_before': l0, 'load_after': load()})
        print(runs[-1], flush=True)
    direct = encode_texts(items.text.tolist(), cache_dir=False, progress=False)
    diff = float(max(np.abs(read_vectors(tmp/f'w{w}')[1] - direct).max() for w in (1, 2)))
    ray.shutdown()
    speedup = runs[1]['texts_per_s'] / runs[0]['texts_per_s']
    return {'texts': n, 'copies_of_the_catalogue': a.encode_copies, 'shard_rows': a.encode_shard_rows, 'model': 'all-MiniLM-L6-v2 (bundled), fp32, 1 torch thread per worker', 'runs': runs,
            'speedup_2_vs_1': speedup, 'target_speedup': TARGETS['encode_speedup'], 'speedup_met': speedup >= TARGETS['encode_speedup'],
            'max_abs_diff_vs_encode_texts': diff, 'identical_met': diff < TARGETS['encode_max_abs_diff'],
            'texts_per_s_per_core': runs[0]['texts_per_s'], 'warmup_seconds': connect_warm['seconds']}

# ---------------------------------------------------------------------------------------------------------------- recommend
class SyntheticRun:
    "A run-like object: 100k realistic item vectors, users with 5-30 item histories; the user vector is the history's mean."
    def __init__(self, n_users: int, n_items: int, seed: int=0):
        gen = Generator(real_vectors(), 'real+noise')
        self.vectors = np.concatenate([gen(min(50_000, n_items - s), [seed, s]) for s in range(0, n_items, 50_000)])
        self.vectors /= np.linalg.norm(self.vectors, axis=1, keepdims=True)
        rng = np.random.default_rng(seed + 1)
        lens = rng.integers(5, 31, n_users)
        flat = rng.integers(0, n_items, lens.sum()).astype(np.int32)
        self.histories = np.split(flat, np.cumsum(lens)[:-1])
        self.item_index, self.user_index, self.model = pd.RangeIndex(n_items), pd.RangeIndex(n_users), self
    def item_matrix(self): return self.vectors
    def user_vectors(self, hists):
        idx = np.concatenate(hists); seg = np.repeat(np.arange(len(hists)), [len(h) for h in hists])
        u = np.zeros((len(hists), self.vectors.shape[1]), np.float32); np.add.at(u, seg, self.vectors[idx])
        return u / np.array([len(h) for h in hists], np.float32)[:, None]
    def score_histories(self, hists): return self.user_vectors(hists) @ self.vectors.T

def load_synthetic_run(spec: str):
    "Loader for recommend_all: the run 'synthetic:<users>:<items>' rebuilt from its seed in each worker."
    _, u, i = str(spec).rsplit('/', 1)[-1].split(':')
    return SyntheticRun(int(u), int(i))

def bench_recommend(a, tmp: Path) -> dict:
    from transferrec.scale import recommend_all, connect, read_shard, shard_paths
    n_users, n_items = (100_000, 20_000) if a.quick else (1_000_000, 100_000)
    spec = f'synthetic:{n_users}:{n_items}'
    pd.DataFrame({'user_id': np.arange(n_users)}).to_parquet(tmp/'users.parquet')
    connect(num_cpus=2)
    l0, t0 = load(), time.perf_counter()
    done = recommend_all(spec, tmp/'users.parquet', tmp/'topk', load_synthetic_run, k=10, shard_rows=50_000, ray=True, workers=2,
                         progress=False)
    wall = time.perf_counter() - t0
    print(done, flush=True)
    # the in-process path on a sample of users, with the same index. A matrix product's rounding can depend on which other
    # rows share its batch, so the sample is made of whole batches of the Ray job (8 blocks of `batch` users, aligned to
    # its shards and batches): the same users in the same batches must give the same bytes.
    batch, shard_rows = 256, 50_000
    starts = [s + b * batch for s in range(0, n_users, shard_rows) for b in range(-(-min(shard_rows, n_users - s) // batch))]
    blocks = np.sort(np.random.default_rng(0).choice(len(starts), 8, replace=False))
    sample = np.concatenate([np.arange(starts[b], min(starts[b] + batch, n_users)) for b in blocks])
    pd.DataFrame({'user_id': sample}).to_parquet(tmp/'sample.parquet')
    local = recommend_all(spec, tmp/'sample.parquet', tmp/'topk-local', load_synthetic_run, k=10, shard_rows=len(sample), batch=batch,
                          threads=1, progress=False)
    got = pd.concat([read_shard(p) for p in shard_paths(tmp/'topk')[1]], ignore_index=True)
    ref = pd.concat([read_shard(p) for p in shard_paths(tmp/'topk-local')[1]], ignore_index=True)
    mine = got[got.user_id.isin(sample)].reset_index(drop=True)
    same_shape = len(mine) == len(ref)
    same_rows = (mine.user_id.to_numpy() == ref.user_id.to_numpy()) & (mine.item_id.to_numpy() == ref.item_id.to_numpy()) if same_shape else np.zeros(len(ref), bool)
    identical = bool(same_shape and same_rows.all() and (mine.score.to_numpy() == ref.score.to_numpy()).all())
    sets_equal = same_shape and (mine.groupby('user_id').item_id.apply(frozenset) == ref.groupby('user_id').item_id.apply(frozenset)).all()
    max_score_diff = float(np.abs(mine.score.to_numpy() - ref.score.to_numpy()).max()) if same_shape else None
    # and what the approximate index costs: recall@10 of the job's top-10 against exact scoring of the whole catalogue
    run = SyntheticRun(n_users, n_items)
    hists = [run.histories[u] for u in sample]
    S = run.score_histories(hists)
    for r, h in enumerate(hists): S[r, h] = -np.inf
    exact_top = np.argsort(-S, axis=1)[:, :10]
    from transferrec.retrieval import recall_at_k as recall
    found = mine.groupby('user_id', sort=True).item_id.apply(list)
    sample_recall = recall(np.array([(f + [-1] * 10)[:10] for f in found.loc[sample]]), exact_top)
    import ray; ray.shutdown()
    return {'users': n_users, 'items': n_items, 'k': 10, 'dim': 384, 'vectors': 'real+noise', 'index': done['index'],
            'shards': done['shards'], 'workers': done['workers'], 'job_seconds': done['seconds'], 'wall_seconds': wall,
            'users_per_s': n_users / done['seconds'], 'worker_peak_mb': done['worker_peak_mb'], 'load_before': l0, 'load_after': load(),
            'target_minutes': TARGETS['recommend_minutes'], 'time_met': wall < 60 * TARGETS['recommend_minutes'],
            'memory_met': done['worker_peak_mb'] < TARGETS['recommend_worker_mb'],
            'sample_users_compared': len(sample), 'sample_identical_to_in_process': identical, 'sample_rows_differing': int((~same_rows).sum()),
            'sample_recall_at_10_vs_exact': sample_recall,
            'sample_same_item_sets': bool(sets_equal), 'sample_max_score_diff': max_score_diff,
            'note': ('the index is built in the driver (IVF-PQ, exact re-scoring, when the catalogue has >= 100,000 items) and shipped '
                     'once through the object store; the in-process comparison builds its index with the same seed and scores whole '
                     'batches of the Ray job (8 x 256 users), 1 thread, as the workers do')}

# ---------------------------------------------------------------------------------------------------------------- indexes
def sweep(ix, queries: np.ndarray, truth: np.ndarray, grid: list, target: float) -> dict:
    "recall@10 on every query and one-query latency on 200 of them, for each setting in `grid` (dicts for `set_params`)."
    rows = []
    for params in grid:
        ix.set_params(**params)
        rows.append({**params, 'recall@10': recall_at_k(ix.search(queries, 10)[1], truth), **latency(ix, queries[:200])})
        print(rows[-1], flush=True)
    ok = [r for r in rows if r['recall@10'] >= target]
    best = min(ok, key=lambda r: r['p50_ms']) if ok else max(rows, key=lambda r: r['recall@10'])
    return {'chosen': best, 'sweep': rows}

def recall_at_k(found, truth):
    from transferrec.retrieval import recall_at_k as r
    return r(found, truth)

def bench_index1m(a, tmp: Path) -> dict:
    "IVF-PQ (exact re-scoring) and HNSW on 1M realistic vectors, each built from shards; the fastest setting that meets the target."
    from transferrec.retrieval import VectorIndex
    n = 200_000 if a.quick else 1_000_000
    real, out = real_vectors(), {}
    for kind in a.vectors.split(','):
        gen = Generator(real, kind)
        shards = [gen(100_000, [1, s]) for s in range(0, n, 100_000)]
        queries = gen(1000, [2, 0])
        t0 = time.perf_counter(); truth = exact_truth(shards, queries); truth_s = time.perf_counter() - t0
        sample = np.concatenate([s[:50_000 * len(s) // n] for s in shards])     # 50,000 rows, from every shard
        builds = {}
        for index, options, grid in (
                ('ivfpq', dict(nlist=1024), [dict(nprobe=p, k_factor=f) for p in (64, 128) for f in (64, 128)]),
                ('hnsw', dict(hnsw_m=32, ef_construction=a.ef_construction), [dict(ef_search=e) for e in (128, 256, 512, 1024)]),
                ('hnsw-int8', dict(**graph_options(a.graph1m), k_factor=10,
                                   rescore_file=str(tmp/'rows1m.npy')), [dict(ef_search=e) for e in (128, 256, 512, 1024)])):
            l0 = load()
            ix = VectorIndex.from_shards(shards, sample, n, kind=index.split('-')[0], **options)
            print(kind, ix, 'load', l0, '->', load(), flush=True)
            builds[index] = {'index': repr(ix).split(', nprobe')[0].split(', ef_search')[0], 'options': {k: v for k, v in options.items() if k != 'rescore_file'},
                             'memory_mb': ix.memory_mb, 'disk_mb': ix.disk_mb,
                             'build_seconds': ix.build_seconds, 'build_load': [l0, load()],
                             **sweep(ix, queries, truth, grid, TARGETS['index1m_recall'])}
            c = builds[index]['chosen']
            builds[index]['met'] = c['recall@10'] >= TARGETS['index1m_recall'] and c['p50_ms'] < TARGETS['index_p50_ms']
            del ix; gc.collect()
        met = [k for k, b in builds.items() if b['met']]
        best = min(met, key=lambda k: builds[k]['chosen']['p50_ms']) if met else max(builds, key=lambda k: builds[k]['chosen']['recall@10'])
        out[kind] = {'items': n, 'queries': len(queries), 'truth_seconds': truth_s, 'best': best, 'met': bool(met), 'builds': builds}
        del shards; gc.collect()
    return out

GRAPH1M, GRAPH10M = '128,24,80', '96,32,64'   # the int8 graphs of the record: directions, degree (M), build beam width

def graph_options(spec: str) -> dict:
    "'dims,M,ef_construction' -> the int8 graph's VectorIndex options."
    dims, m, efc = (int(x) for x in spec.split(','))
    return dict(dtype='int8', dims=dims, hnsw_m=m, ef_construction=efc)

def spread_kept(real: np.ndarray, dims: int) -> float:
    """Share of the scores' spread across items that the graph's `dims` directions keep, for queries drawn like the items:
    1 - E_q Var_x(q'(I - PP')x) / E_q Var_x(q'x) = 1 - tr(R S R M) / tr(S M), with S the covariance, M the second moment, R = I - PP'."""
    from transferrec.retrieval import leading_directions
    x = real.astype(np.float64)
    m, cov = x.T @ x / len(x), np.cov(x.T)
    P = leading_directions(real, dims).astype(np.float64)
    r = np.eye(len(m)) - P @ P.T
    return float(1 - np.trace(r @ cov @ r @ m) / np.trace(cov @ m))

def rss_parts() -> dict:
    "The process's resident memory split into its own (anonymous) pages and mapped file pages (the re-scoring file, in the page cache)."
    st = open('/proc/self/status').read()
    return {k: int(re.search(rf'{k}:\s+(\d+)', st).group(1)) / 1024 for k in ('RssAnon', 'RssFile')}

def cold_latency(ix, queries: np.ndarray) -> dict:
    "One-query latency with the re-scoring file dropped from the page cache first: every candidate row read from disk."
    ix.release_rows(); gc.collect()                                     # unmap it, so the cache can drop its pages
    fd = os.open(ix.rescore_file, os.O_RDONLY)
    try: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally: os.close(fd)
    ts = []
    for q in queries:
        t = time.perf_counter(); ix.search(q[None], 10); ts.append(time.perf_counter() - t)
    return {'p50_ms': float(np.percentile(ts, 50) * 1e3), 'p99_ms': float(np.percentile(ts, 99) * 1e3), 'queries': len(queries), 'load': load()}

def bench_index10m(a, tmp: Path) -> dict:
    "HNSW in the 128 leading directions (8-bit codes) over 10M realistic vectors generated shard by shard, re-scored from a file on disk."
    from transferrec.retrieval import VectorIndex
    n, rows = (1_000_000 if a.quick else a.index_items), 250_000
    kind, real = 'gaussian', real_vectors()
    gen = Generator(real, kind)
    shards = [lambda s=s: gen(min(rows, n - s), [3, s]) for s in range(0, n, rows)]
    queries = gen(1000, [4, 0])
    keep = Path(a.index10m_dir) if a.index10m_dir else tmp
    keep.mkdir(parents=True, exist_ok=True)
    options = dict(**graph_options(a.graph10m), k_factor=10, rescore_file=str(keep/'rows10m.npy'))
    if (keep/'index10m.json').exists():                                  # kept by an earlier run: searched again, not rebuilt
        ix, built = VectorIndex.from_bytes((keep/'index10m.bin').read_bytes()), json.loads((keep/'index10m.json').read_text())
    else:
        l0, t0 = load(), time.perf_counter()
        per_shard = max(1, a.train_size * rows // n)
        sample = np.concatenate([shard()[:per_shard].copy() for shard in shards])     # the head of every shard (a copy: not the whole shard)
        ix = VectorIndex.from_shards(shards, sample, n, kind='hnsw', **options)
        built = {'build_peak_mb': peak_mb(), 'build_seconds': time.perf_counter() - t0, 'build_load': [l0, load()], 'train_rows': len(sample)}
        del sample; gc.collect()
        if a.index10m_dir: (keep/'index10m.bin').write_bytes(ix.to_bytes()); (keep/'index10m.json').write_text(json.dumps(built))
    print('built', ix, 'rss', rss_mb(), built, flush=True)
    t1 = time.perf_counter(); truth = exact_truth(shards, queries); truth_s = time.perf_counter() - t1
    print('truth', truth_s, flush=True)
    found = sweep(ix, queries, truth, [dict(ef_search=e, k_factor=f) for e in (256, 512, 768, 1024, 1280) for f in (10, 20, 40)],
                  TARGETS['index10m_recall'])
    c, resident = found['chosen'], rss_parts()
    ix.set_params(ef_search=c['ef_search'], k_factor=c['k_factor'])
    cold = cold_latency(ix, queries[:200])
    print('cold', cold, flush=True)
    return {'items': n, 'vectors': kind, 'shard_rows': rows, 'options': {**options, 'rescore_file': 'rows10m.npy in the index folder'}, **built,
            'spread_kept_by_dims': spread_kept(real, options['dims']), 'index': repr(ix).split(', ef_search')[0], 'memory_mb': ix.memory_mb, 'disk_mb': ix.disk_mb,
            'rss_anon_mb': resident['RssAnon'], 'rss_file_mb': resident['RssFile'],
            'process_peak_mb': peak_mb(), 'truth_seconds': truth_s, **found, 'cold_cache': cold,
            'met': c['recall@10'] >= TARGETS['index10m_recall'] and c['p50_ms'] < TARGETS['index_p50_ms'] and ix.memory_mb < TARGETS['index10m_mb']}

# ---------------------------------------------------------------------------------------------------------------- report
def report(res: dict) -> str:
    lines = ['# Scale benchmark', '', f"Machine: {res.get('machine', '?')}. Load average (1, 5, 15 min) next to each timing.", '']
    if 'encode' in res:
        e = res['encode']; lines += [f"## encode (Ray, {e['texts']:,} texts: ml-100k's item texts x {e.get('copies_of_the_catalogue', 1)}, MiniLM, {e['shard_rows']} per shard)" + (' -- quick run' if e.get('quick') else ''), '', '| workers | texts/s | seconds | load before |', '|---|---|---|---|']
        lines += [f"| {r['workers']} | {r['texts_per_s']:.1f} | {r['seconds']:.1f} | {r['load_before']} |" for r in e['runs']]
        lines += ['', f"speed-up 2 vs 1 workers: **{e['speedup_2_vs_1']:.2f}x** (target >= {e['target_speedup']}: {'met' if e['speedup_met'] else 'missed'}); "
                      f"max abs diff vs encode_texts {e['max_abs_diff_vs_encode_texts']:.2e} ({'met' if e['identical_met'] else 'missed'})", '']
    if 'recommend' in res:
        r = res['recommend']
        lines += ['## recommend-all' + (' -- quick run, not the target size' if r.get('quick') else ''), '', f"{r['users']:,} users x {r['items']:,} items, k=10, {r['workers']} Ray workers, index {r['index']}: "
                  f"**{r['wall_seconds'] / 60:.1f} min** ({r['users_per_s']:,.0f} users/s; target < {r['target_minutes']} min: {'met' if r['time_met'] else 'missed'}), "
                  f"peak memory per worker **{r['worker_peak_mb']:,.0f} MB** ({'met' if r['memory_met'] else 'missed'}), "
                  f"{r['sample_users_compared']:,} sampled users against the in-process path: identical {r['sample_identical_to_in_process']}, "
                  f"{r.get('sample_rows_differing', '?')} rows differ, same item sets {r.get('sample_same_item_sets', '?')}, max score diff {r.get('sample_max_score_diff', '?')}; "
                  f"recall@10 of the job against exact scoring on those users {r.get('sample_recall_at_10_vs_exact', float('nan')):.3f}; load {r['load_before']} -> {r['load_after']}", '']
    def setting(c): return ', '.join(f"{k} {c[k]}" for k in ('nprobe', 'k_factor', 'ef_search') if k in c)
    head = ['| vectors | items | index | memory MB | disk MB | build s (load) | setting | recall@10 | p50 ms | p99 ms | load | met |', '|---|---|---|---|---|---|---|---|---|---|---|---|']
    def label(name, b):
        opts = {k: v for k, v in b.get('options', {}).items() if k not in ('rescore_file', 'train_iterations')}
        return f"{name} ({', '.join(f'{k} {v}' for k, v in opts.items())})" if opts else b['index']
    def row(kind, items, b, name):
        c = b['chosen']
        return (f"| {kind} | {items:,} | {label(name, b)} | {b['memory_mb']:,.0f} | {b.get('disk_mb', 0):,.0f} | {b['build_seconds']:,.0f} ({b['build_load'][0]}) | {setting(c)} | "
                f"{c['recall@10']:.3f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} | {c['load']} | {'yes' if b['met'] else 'no'} |")
    one = {k: v for k, v in res.get('index1m', {}).items() if isinstance(v, dict) and 'builds' in v}
    if one:
        lines += ['## 1M-item index (built from 10 shards; target recall@10 >= 0.95 at p50 < 10 ms, one query at a time)', '',
                  'Per index type, the fastest setting that meets the recall target (else the one with the best recall); '
                  'the full sweeps are in scale.json.', ''] + head
        lines += [row(kind, g['items'], b, name) for kind, g in one.items() for name, b in g['builds'].items()]
        lines += ['', 'Met by: ' + ', '.join(f"{kind}: {g['best'] if g['met'] else 'none'}" for kind, g in one.items()), '']
    if 'index10m' in res and 'chosen' in res['index10m']:
        t = res['index10m']
        lines += ['## 10M-item index from shards (target recall@10 >= 0.90, p50 < 10 ms, memory < 4 GB)' + (' -- quick run, not the target size' if t.get('quick') else ''), '', *head, row(t['vectors'], t['items'], t, 'hnsw-int8'), '']
        if 'disk_mb' in t:
            cold = t['cold_cache']
            lines += [f"HNSW over 8-bit codes of the {t['options']['dims']} leading directions of the vectors' second moment (they keep {t['spread_kept_by_dims']:.1%} of the "
                      f"scores' spread across items, measured on the real MiniLM vectors), its {t['chosen'].get('k_factor', t['options']['k_factor'])} x k best candidates (the chosen setting) re-scored exactly from a float32 file on disk "
                      f"({t['disk_mb']:,.0f} MB). Index memory {t['memory_mb']:,.0f} MB (FAISS's serialised size and the directions); process RSS after the sweep: "
                      f"{t['rss_anon_mb']:,.0f} MB its own (the index, the queries, Python and its libraries), and {t['rss_file_mb']:,.0f} MB pages of the mapped file (page cache the kernel can drop). "
                      f"Peak RSS {t['process_peak_mb']:,.0f} MB, mapped file pages included (the build's {t['build_peak_mb']:,.0f} MB). Built in {t['build_seconds'] / 60:.1f} min from "
                      f"{-(-t['items'] // t['shard_rows'])} shards generated one at a time, directions and code ranges from {t['train_rows']:,} sampled rows; "
                      f"exact truth over the shards took {t['truth_seconds']:.0f} s.", '',
                      f"With the file dropped from the page cache before the run (every candidate row read from the disk), the chosen setting's "
                      f"p50 is {cold['p50_ms']:.2f} ms and p99 {cold['p99_ms']:.2f} ms over {cold['queries']} queries (load {cold['load']}).", '',
                      '| ef_search | k_factor | recall@10 | p50 ms | p99 ms | load |', '|---|---|---|---|---|---|']
            lines += [f"| {r['ef_search']} | {r.get('k_factor', t['options']['k_factor'])} | {r['recall@10']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['load']} |" for r in t['sweep']]
        lines.append('')
    return '\n'.join(lines) + '\n'

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--only', default='encode,recommend,index1m,index10m')
    p.add_argument('--quick', action='store_true', help='small sizes (a smoke run)')
    p.add_argument('--index-items', type=int, default=10_000_000)
    p.add_argument('--encode-copies', type=int, default=3, help='encode: copies of the ml-100k catalogue encoded (each text marked with its copy)')
    p.add_argument('--encode-shard-rows', type=int, default=128, help='encode: texts per shard (one Ray task each)')
    p.add_argument('--train-size', type=int, default=250_000, help='index10m: sample rows (the leading directions and the 8-bit codes\' ranges)')
    p.add_argument('--ef-construction', type=int, default=80, help='index1m: HNSW build beam width')
    p.add_argument('--graph1m', default=GRAPH1M, help='index1m: the int8 graph\'s directions, degree (M) and build beam width')
    p.add_argument('--graph10m', default=GRAPH10M, help='index10m: the int8 graph\'s directions, degree (M) and build beam width')
    p.add_argument('--index10m-dir', help='index10m: keep the built index and its re-scoring file here (15 GB), and search a kept one again instead of rebuilding')
    p.add_argument('--vectors', default='gaussian,real+noise', help='index1m: generators to run (each merged into the record)')
    p.add_argument('--out', default=str(HERE/'scale.json'))
    a = p.parse_args()
    out = Path(a.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    res['machine'] = f"{os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB"
    tmp = Path(tempfile.mkdtemp(prefix='scale-bench-', dir=os.environ.get('TMPDIR')))
    ray_env(tmp)
    try:
        for name in a.only.split(','):
            t0 = time.perf_counter(); print('==', name, 'load', load(), flush=True)
            new = {'quick': a.quick, **globals()[f'bench_{name}'](a, tmp), 'section_seconds': time.perf_counter() - t0, 'section_load_after': load()}
            res[name] = {**{k: v for k, v in res.get(name, {}).items() if name == 'index1m' and isinstance(v, dict) and 'builds' in v}, **new}
            out.write_text(json.dumps(res, indent=1, default=float))
            (out.with_suffix('.md')).write_text(report(res))
    finally: shutil.rmtree(tmp, ignore_errors=True)
    print(report(res))

if __name__ == '__main__': main()
