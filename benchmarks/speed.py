"""Speed and scale benchmarks of transferrec, each side by side with the alternative, in one process.

Sections (all by default; pick some with --only a,b):
  encoding     encode_texts (fp32 and int8) vs sentence-transformers on the ml-100k item texts, and the quality of int8
  finetune     training throughput of every strategy; the cross-encoder with dynamic padding vs padding to 512 tokens
  serving      Recommender.recommend latency for one user, and scoring + ranking all 943 users (ml-100k)
  catalogue    transferrec.retrieval indexes on a synthetic 1,000,000 x 384 catalogue (200,000 with --quick)
  data         load_csv + clean + split of a synthetic 20,000,000-interaction CSV (2,000,000 with --quick), in a subprocess
  distributed  tests/test_distributed.py's two-tower run: one process vs torchrun with two gloo processes

Only on request (--only truncation; `make bench-truncation`, about 40 minutes on 2 cores):
  truncation   validation quality of the cross-encoder trained on the last 5 items in 64 tokens vs the seed's last 50
               items in 512 tokens, same seed, steps and pairs, on every validation user

Timed comparisons alternate the two sides round by round after a warm-up and report medians and their ratio. Run it
with `nice`: the load average of the machine is recorded before and after each section. Writes benchmarks/results.json
and benchmarks/results.md. Usage: python benchmarks/speed.py [--quick] [--only encoding,serving] [--threads 1]"""
import argparse, contextlib, gc, json, os, platform, resource, shutil, socket, subprocess, sys, tempfile, textwrap, time
from pathlib import Path
import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import torch, transformers
import transferrec
from transferrec.data import load_movielens, split, item_text
from transferrec.encoders import load_encoder, encode_texts, default_encoder_path

SECTIONS = ('encoding', 'finetune', 'serving', 'catalogue', 'data', 'distributed')
ON_REQUEST = ('truncation',)

def load() -> list: return [round(x, 2) for x in os.getloadavg()]

def median(xs) -> float: return float(np.median(xs))

def rss_mb() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    mem = None
    with contextlib.suppress(OSError, StopIteration):
        mem = round(int(next(l.split()[1] for l in open('/proc/meminfo') if l.startswith('MemTotal'))) / 2**20, 1)
    versions = {'python': platform.python_version(), 'numpy': np.__version__, 'torch': torch.__version__,
                'transformers': transformers.__version__, 'transferrec': transferrec.__version__}
    for name in ('sentence_transformers', 'faiss', 'pandas', 'pyarrow'):
        with contextlib.suppress(ImportError): versions[name] = __import__(name).__version__
    return {'cpu': cpu, 'cores': os.cpu_count(), 'memory_gb': mem, 'os': platform.platform(),
            'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, 'versions': versions}

def alternate(sides: dict, rounds: int, warmup: int=1, cpu: dict|None=None) -> dict:
    "Wall time of each side, `rounds` times, alternating (the order flips every round) after `warmup` untimed calls of each."
    for f in sides.values():
        for _ in range(warmup): f()
    times = {k: [] for k in sides}
    if cpu is not None: cpu.update({k: [] for k in sides})   # and CPU time of this process, when asked
    names = list(sides)
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            c0, t0 = time.process_time(), time.perf_counter(); sides[k]()
            times[k].append(time.perf_counter() - t0)
            if cpu is not None: cpu[k].append(time.process_time() - c0)
    return times

_ML = {}
def ml100k():
    if 'ds' not in _ML: _ML['ds'] = load_movielens('ml-100k')
    return _ML['ds']

def loo():
    if 'loo' not in _ML: _ML['loo'] = split(ml100k(), 'loo', seed=0)
    return _ML['loo']

# ---------------------------------------------------------------------------------------------------------------------
def bench_encoding(a) -> dict:
    from sentence_transformers import SentenceTransformer
    from transferrec.evaluate import evaluate
    from transferrec.finetune import SequentialRecommender
    texts = item_text(ml100k().items)
    timed = texts[:400] if a.quick else texts
    enc32, enc8 = load_encoder(device='cpu'), load_encoder(quantize=True)
    st = SentenceTransformer(str(default_encoder_path()), device='cpu')
    st.max_seq_length = 64                                       # encode_texts' default truncation
    bs = 64
    ours = lambda enc: (lambda: encode_texts(timed, enc, batch_size=bs, normalize=True, cache_dir=False, progress=False))  # ST's model ends with Normalize
    theirs = lambda: st.encode(timed, batch_size=bs, show_progress_bar=False, convert_to_numpy=True)
    # the same vectors (a check that both sides do the same work)
    v_st, v_32 = theirs(), ours(enc32)()
    cos = lambda x, y: float(np.min(np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)))
    cpu = {}
    t = alternate({'sentence_transformers': theirs, 'transferrec_fp32': ours(enc32), 'transferrec_int8': ours(enc8)},
                  rounds=3 if a.quick else 5, cpu=cpu)
    med, cmed = {k: median(v) for k, v in t.items()}, {k: median(v) for k, v in cpu.items()}
    out = {'texts': len(timed), 'batch_size': bs, 'max_length': 64, 'cache': False,
           'seconds': t, 'median_seconds': med, 'texts_per_second': {k: len(timed) / v for k, v in med.items()},
           'speedup_fp32_vs_st': med['sentence_transformers'] / med['transferrec_fp32'],
           'speedup_int8_vs_st': med['sentence_transformers'] / med['transferrec_int8'],
           'cpu_seconds': cpu, 'cpu_median_seconds': cmed,
           'cpu_speedup_fp32_vs_st': cmed['sentence_transformers'] / cmed['transferrec_fp32'],
           'cpu_speedup_int8_vs_st': cmed['sentence_transformers'] / cmed['transferrec_int8'],
           'min_cosine_fp32_vs_st': cos(v_32, v_st), 'min_cosine_int8_vs_fp32': cos(ours(enc8)(), v_32)}
    # quality: the same small sequential model trained on fp32 vs int8 vectors of the whole catalogue, paired seeds
    sp = loo()
    seeds = (0,) if a.quick else (0, 1, 2)
    budget = dict(epochs=3 if a.quick else 8, patience=3, progress=False, num_threads=torch.get_num_threads())
    vecs = {name: encode_texts(texts, enc, cache_dir=False, progress=False) for name, enc in (('fp32', enc32), ('int8', enc8))}
    q, models = {name: [] for name in vecs}, {}
    for seed in seeds:
        for name, vec in vecs.items():
            models[name, seed] = SequentialRecommender('text', text_vectors=vec, seed=seed, **budget).fit(sp)
            q[name].append(evaluate(models[name, seed], sp, k=10)['ndcg@10'])
    # training-free: the fp32-trained model of the first seed scoring with int8 vectors (no retraining, so no seed noise)
    m = models['fp32', seeds[0]]
    m.net.text, m._cache = torch.as_tensor(vecs['int8']), None
    swapped = evaluate(m, sp, k=10)['ndcg@10']
    mean = {k: float(np.mean(v)) for k, v in q.items()}
    out['quality'] = {'protocol': 'loo', 'model': "SequentialRecommender('text', text_vectors=...)", **budget, 'seeds': list(seeds),
                      'test_ndcg@10': q, 'mean_test_ndcg@10': mean,
                      'relative_change': (mean['int8'] - mean['fp32']) / mean['fp32'],
                      'paired_relative_changes': [(b - a) / a for a, b in zip(q['fp32'], q['int8'])],
                      'seed_spread_relative': (max(q['fp32']) - min(q['fp32'])) / mean['fp32'],
                      'fp32_model_scored_with_int8_vectors': swapped,
                      'swap_relative_change': (swapped - q['fp32'][0]) / q['fp32'][0],
                      'neighbour_overlap@10': _neighbour_overlap(vecs['fp32'], vecs['int8'])}
    return out

def _neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int=10) -> float:
    "Training-free fidelity: the mean share of each item's k nearest items (cosine, itself excluded) kept by `b`."
    def nn(v):
        v = v / np.linalg.norm(v, axis=1, keepdims=True); s = v @ v.T; np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1, kind='stable')[:, :k]
    x, y = nn(a), nn(b)
    return float(np.mean([len(set(r) & set(t)) / k for r, t in zip(x.tolist(), y.tolist())]))

# ---------------------------------------------------------------------------------------------------------------------
class _StepTimer:
    "A TrainerCallback that records the wall time of every optimizer step."
    def __init__(self): self.times, self._t = [], None
    def __getattr__(self, name):  # every other TrainerCallback event: no-op
        if name.startswith('on_'): return lambda *a, **k: None
        raise AttributeError(name)
    def on_step_begin(self, *a, **k): self._t = time.perf_counter()
    def on_step_end(self, *a, **k):
        if self._t is not None: self.times.append(time.perf_counter() - self._t)

@contextlib.contextmanager
def _timed_trainer(module, cls_name: str, timer: _StepTimer):
    "Let the strategy's Trainer class also call `timer` (the strategy builds its Trainer itself)."
    base = getattr(module, cls_name)
    class Timed(base):
        def __init__(self, *args, callbacks=None, **kw): super().__init__(*args, callbacks=[*(callbacks or []), timer], **kw)
    setattr(module, cls_name, Timed)
    try: yield
    finally: setattr(module, cls_name, base)

def bench_finetune(a) -> dict:
    import transferrec.crossencoder as ce, transferrec.twotower as tt
    from transferrec.crossencoder import CrossEncoderReranker, CROSS_ENCODER_TUTORIAL, PairTextCollator
    from transferrec.twotower import TwoTowerRecommender, TWO_TOWER_TUTORIAL
    from transferrec.finetune import SequentialRecommender, history_windows
    from transferrec.evaluate import evaluate
    sp, th = loo(), torch.get_num_threads()
    out = {'dataset': 'ml-100k loo'}
    # sequential: windows per second over a few epochs, validation time subtracted
    seq = SequentialRecommender('text', epochs=2, patience=99, seed=0, progress=False, num_threads=th)
    seq.text_vectors = encode_texts(item_text(ml100k().items), load_encoder(), progress=False)
    seq.fit(sp)
    t0 = time.perf_counter(); evaluate(seq, sp, k=10, on='valid'); ev = time.perf_counter() - t0
    windows = len(history_windows(sp.sequences('train'), seq.config['max_len'])[0])
    train_s = seq.history[-1]['seconds'] - ev * len(seq.history)
    out['sequential'] = {'windows': windows, 'epochs': len(seq.history), 'batch_size': seq.config['batch_size'],
                         'windows_per_second': windows * len(seq.history) / train_s}
    # two-tower: pairs per second through the Trainer
    steps = 8 if a.quick else 24
    timer = _StepTimer()
    with _timed_trainer(tt, 'TwoTowerTrainer', timer):
        two = TwoTowerRecommender(**{**TWO_TOWER_TUTORIAL, 'max_steps': steps, 'eval_steps': 10_000, 'eval_users': 30,
                                     'patience': None}, num_threads=th, progress=False).fit(sp)
    out['two_tower'] = {'config': 'TWO_TOWER_TUTORIAL', 'steps': steps, 'batch_size': TWO_TOWER_TUTORIAL['batch_size'],
                        'trainable_layers': TWO_TOWER_TUTORIAL['trainable_layers'],
                        'pairs_per_second_trainer': two.train_stats_['samples_per_second'],
                        'pairs_per_second_median_step': TWO_TOWER_TUTORIAL['batch_size'] / median(timer.times[1:])}
    del two; gc.collect()
    # cross-encoder: dynamic padding + short histories (the tutorial settings) vs the seed's configuration:
    # every pair padded to the tokenizer's 512 tokens, histories of the last 50 items
    class PadToMax(PairTextCollator):
        "The seed's batches: every pair padded to `pad_to` tokens (512, the tokenizer's maximum) after truncation."
        pad_to = 512
        def __call__(self, features):
            b = self.tokenizer([f['text'] for f in features], [f['text_pair'] for f in features],
                               truncation='longest_first', max_length=self.max_length)
            b = self.tokenizer.pad(b, padding='max_length', max_length=self.pad_to, return_tensors='pt')
            if 'labels' in features[0]:
                y = torch.tensor([f['labels'] for f in features])
                b['labels'] = y.float().unsqueeze(1) if self.num_labels == 1 else y.long()
            return dict(b)
    bs = CROSS_ENCODER_TUTORIAL['batch_size']
    short = dict(history_items=CROSS_ENCODER_TUTORIAL['history_items'], max_length=CROSS_ENCODER_TUTORIAL['max_length'])
    sides = {'padded_512': dict(history_items=50, max_length=512, steps=3, collator=PadToMax),   # the seed's configuration
             'padded_512_short': dict(**short, steps=3, collator=PadToMax),   # the same inputs as `dynamic`, padded to 512
             'dynamic': dict(**short, steps=8 if a.quick else 12, collator=PairTextCollator)}
    runs = {k: [] for k in sides}
    tokens = {}
    for r in range(1 if a.quick else 2):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            s = sides[name]
            timer, base = _StepTimer(), ce.PairTextCollator
            ce.PairTextCollator = s['collator']
            try:
                with _timed_trainer(ce, 'CrossEncoderTrainer', timer):
                    m = CrossEncoderReranker(**{**CROSS_ENCODER_TUTORIAL, 'retriever': 'pop', 'history_items': s['history_items'],
                                                'max_length': s['max_length'], 'max_steps': s['steps'], 'eval_steps': 10_000,
                                                'eval_users': 10, 'top_n': 5, 'patience': None},
                                             num_threads=th, progress=False).fit(sp)
            finally: ce.PairTextCollator = base
            pairs = m.training_pairs(sp)
            feats = [pairs[i] for i in range(bs)]
            tokens[name] = int(m.collator(feats)['input_ids'].numel())
            runs[name].append({'step_seconds': timer.times, 'samples_per_second_trainer': m.train_stats_['samples_per_second']})
            if name == 'dynamic': same_logits = _padding_changes_nothing(m, feats, PadToMax)
            del m; gc.collect()
    res = {}
    for name, rs in runs.items():
        steps_t = [x for r in rs for x in r['step_seconds'][1:]]          # the first step of each run is the warm-up
        res[name] = {'history_items': sides[name]['history_items'], 'max_length': sides[name]['max_length'],
                     'padding': 'max_length' if sides[name]['collator'] is PadToMax else 'longest in batch',
                     'tokens_per_batch': tokens[name], 'steps_per_run': sides[name]['steps'], 'runs': len(rs),
                     'median_step_seconds': median(steps_t), 'pairs_per_second': bs / median(steps_t),
                     'pairs_per_second_trainer': median([r['samples_per_second_trainer'] for r in rs]), 'raw': rs}
    out['cross_encoder'] = {'config': 'CROSS_ENCODER_TUTORIAL (batch 32, top 3 layers trained)', **res,
                            'speedup': res['dynamic']['pairs_per_second'] / res['padded_512']['pairs_per_second'],
                            'speedup_padding_only': res['dynamic']['pairs_per_second'] / res['padded_512_short']['pairs_per_second'],
                            'padding_max_abs_logit_difference': same_logits, 'padding_check_pairs': bs}
    return out

def _padding_changes_nothing(m, pairs: list[dict], padded) -> float:
    "Largest |logit difference| of a trained cross-encoder over `pairs`, dynamic vs 512-token padding."
    feats = [{k: v for k, v in f.items() if k != 'labels'} for f in pairs]
    wide = padded(m.tokenizer, m.config['max_length'], m.config['num_labels'])
    m.model.eval()
    with torch.inference_mode(): a, b = (m.model(**c(feats)).logits for c in (m.collator, wide))
    return float((a - b).abs().max())

def bench_truncation(a) -> dict:
    "Re-ranked valid ndcg@10 of the cross-encoder with truncated histories vs the seed's, paired over the same users."
    from transferrec.crossencoder import CrossEncoderReranker, CROSS_ENCODER_TUTORIAL
    from transferrec.evaluate import rank_metrics, EASE
    from transferrec.study import bootstrap_ci
    sp, th = loo(), torch.get_num_threads()
    held_out = sp.matrix('valid')
    valid = np.flatnonzero(np.asarray(held_out.sum(1)).ravel() > 0)
    steps, n_users = (4, 10) if a.quick else (CROSS_ENCODER_TUTORIAL['max_steps'], len(valid))
    users = np.sort(np.random.default_rng(0).choice(valid, n_users, replace=False))
    rel, seen = held_out[users], sp.seen('valid')[users]
    sides = {'truncated': dict(history_items=CROSS_ENCODER_TUTORIAL['history_items'], max_length=CROSS_ENCODER_TUTORIAL['max_length']),
             'seed_inputs': dict(history_items=50, max_length=512)}
    ease = EASE().fit(sp)   # one retriever for both sides
    base = rank_metrics(ease.score(users), rel, k=10, exclude=seen, metrics=['ndcg'])
    out = {'config': 'CROSS_ENCODER_TUTORIAL', 'retriever': 'ease', 'top_n': CROSS_ENCODER_TUTORIAL['top_n'], 'steps': steps,
           'users': n_users, 'users_available': len(valid), 'retriever_valid_ndcg@10': float(np.nanmean(base['ndcg@10']))}
    per_user = {}
    for name, s in sides.items():
        t0 = time.perf_counter()
        m = CrossEncoderReranker(**{**CROSS_ENCODER_TUTORIAL, **s, 'max_steps': steps, 'eval_steps': 10_000, 'patience': None},
                                 retriever=ease, fit_retriever=False, num_threads=th, progress=False).fit(sp)
        t1 = time.perf_counter()
        r = rank_metrics(m.score(users, on='valid'), rel, k=10, exclude=seen, metrics=['ndcg', 'recall'])
        per_user[name] = r['ndcg@10']
        out[name] = {**s, 'valid_ndcg@10': float(np.nanmean(r['ndcg@10'])), 'valid_recall@10': float(np.nanmean(r['recall@10'])),
                     'train_seconds': t1 - t0, 'score_seconds': time.perf_counter() - t1, 'pairs': m.n_pairs_}
        print(name, out[name], flush=True)
        del m; gc.collect()
    diff = per_user['truncated'] - per_user['seed_inputs']
    out['difference'] = dict(zip(('mean', 'low', 'high'), bootstrap_ci(diff)))
    out['relative_change'] = out['difference']['mean'] / out['seed_inputs']['valid_ndcg@10']
    return out

# ---------------------------------------------------------------------------------------------------------------------
_REC = {}
def trained_sequential(a):
    "A sequential text model on ml-100k loo with a small budget (cached for the run)."
    if 'rec' not in _REC:
        from transferrec.recommend import Recommender
        vec = encode_texts(item_text(ml100k().items), load_encoder(), progress=False)
        _REC['rec'] = Recommender('sequential', item_repr='text', text_vectors=vec, epochs=2 if a.quick else 5,
                                  patience=3, seed=0, progress=False).fit(loo())
    return _REC['rec']

def bench_serving(a) -> dict:
    from transferrec.evaluate import topk, evaluate
    rec, sp = trained_sequential(a), loo()
    users = rec.user_ids
    n = 200
    lat = {'explain=False': [], 'explain=True': []}
    for u in users[:10]: rec.recommend(user_id=u, k=10, explain=False); rec.recommend(user_id=u, k=10)
    for j in range(n):
        u = users[(j * 7) % len(users)]
        for flag in ((False, True) if j % 2 == 0 else (True, False)):
            t0 = time.perf_counter(); rec.recommend(user_id=u, k=10, explain=flag)
            lat[f'explain={flag}'].append(time.perf_counter() - t0)
    pct = lambda xs, p: float(np.percentile(xs, p) * 1000)
    out = {'model': 'sequential text, ml-100k loo, small budget', 'calls': n, 'k': 10, 'item_vectors_cached': True,
           'latency_ms': {k: {'p50': pct(v, 50), 'p90': pct(v, 90), 'p99': pct(v, 99)} for k, v in lat.items()}}
    def all_users():
        s = rec.score(np.arange(sp.n_users), on='test')
        s[sp.seen('test').toarray().astype(bool)] = -np.inf
        return topk(s, 10)
    t = alternate({'score_and_rank_all_users': all_users}, rounds=5)['score_and_rank_all_users']
    t2 = alternate({'evaluate': lambda: evaluate(rec.model, sp, k=10)}, rounds=3)['evaluate']
    out['all_users'] = {'users': int(sp.n_users), 'items': int(sp.n_items), 'median_seconds': median(t), 'seconds': t,
                        'evaluate_median_seconds': median(t2)}
    return out

# ---------------------------------------------------------------------------------------------------------------------
def _unit(x): return x / np.linalg.norm(x, axis=1, keepdims=True)

def clustered(n: int, d: int, seed: int, topics: int=50, per_cluster: int=100, noise: float=1.0, chunk: int=100_000) -> np.ndarray:
    "Unit vectors in two levels of clusters (topics -> clusters of ~`per_cluster` items -> items), like text vectors."
    g = np.random.default_rng(12345)
    t = _unit(g.standard_normal((topics, d), dtype=np.float32))
    nc = max(1, n // per_cluster)
    c = _unit(t[g.integers(0, topics, nc)] + noise * g.standard_normal((nc, d), dtype=np.float32) / np.sqrt(d))
    rng, out = np.random.default_rng(seed), np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        out[s:s + m] = _unit(c[rng.integers(0, nc, m)] + noise * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d))
    return out

def user_queries(items: np.ndarray, n: int, seed: int, mix: int=3) -> np.ndarray:
    "Query vectors that mix `mix` random catalogue items plus a little noise (a user who liked a few things)."
    rng = np.random.default_rng(seed)
    return _unit(items[rng.integers(0, len(items), (n, mix))].sum(1)
                 + 0.5 * rng.standard_normal((n, items.shape[1]), dtype=np.float32) / np.sqrt(items.shape[1]))

def bench_catalogue(a) -> dict:
    from transferrec.retrieval import VectorIndex, recall_at_k, faiss_available
    n, d = (200_000 if a.quick else 1_000_000), 384
    t0 = time.perf_counter()
    items = clustered(n, d, seed=0)
    queries = user_queries(items, 200, seed=1)
    out = {'items': n, 'dim': d, 'structure': '50 topics -> clusters of ~100 items -> items (unit vectors, noise 1.0)',
           'query_model': 'unit(sum of 3 random catalogue items + noise)', 'queries': len(queries), 'k': 10,
           'generate_seconds': time.perf_counter() - t0}
    if faiss_available():
        import faiss; faiss.omp_set_num_threads(torch.get_num_threads())
    def lat(ix, qs):
        ix.search(qs[:3], 10)
        ts = []
        for q in qs:
            t = time.perf_counter(); ix.search(q[None], 10); ts.append(time.perf_counter() - t)
        return {'p50_ms': float(np.percentile(ts, 50) * 1000), 'p99_ms': float(np.percentile(ts, 99) * 1000)}
    res = {}
    exact = VectorIndex(items, kind='exact')
    truth = exact.search(queries, 10)[1]
    res['exact_float32'] = {'build_seconds': exact.build_seconds, 'memory_mb': exact.memory_mb, **lat(exact, queries[:40]),
                            'recall@10': 1.0}
    del exact; gc.collect()
    half = VectorIndex(items, kind='exact', dtype='float16')
    res['exact_float16'] = {'build_seconds': half.build_seconds, 'memory_mb': half.memory_mb, **lat(half, queries[:40]),
                            'recall@10': recall_at_k(half.search(queries, 10)[1], truth)}
    del half; gc.collect()
    if faiss_available():
        for dtype in ('float32', 'float16'):
            ivf = VectorIndex(items, kind='ivf', dtype=dtype)
            sweep = {}
            for nprobe in (8, 16, 32, 48, 64, 96):
                ivf.set_params(nprobe=nprobe)
                sweep[nprobe] = {'recall@10': recall_at_k(ivf.search(queries, 10)[1], truth), **lat(ivf, queries)}
            ok = [p for p, r in sweep.items() if r['recall@10'] >= T['index_recall']]
            best = min(ok) if ok else max(sweep)
            res[f'ivf_{dtype}'] = {'nlist': ivf.nlist, 'build_seconds': ivf.build_seconds, 'memory_mb': ivf.memory_mb,
                                   'chosen_nprobe': best, **sweep[best], 'sweep': sweep}
            del ivf; gc.collect()
        m = min(n, a.hnsw_items)
        h = VectorIndex(items[:m], kind='hnsw', ef_search=128)
        ht = VectorIndex(items[:m], kind='exact').search(queries, 10)[1]
        sweep = {}
        for ef in (64, 128, 256, 512):
            h.set_params(ef_search=ef)
            sweep[ef] = {'recall@10': recall_at_k(h.search(queries, 10)[1], ht), **lat(h, queries)}
        ok = [e for e, r in sweep.items() if r['recall@10'] >= T['index_recall']]
        best = min(ok) if ok else max(sweep)
        res['hnsw_float32'] = {'items_indexed': m, 'M': 32, 'ef_construction': h.index.hnsw.efConstruction, 'build_seconds': h.build_seconds,
                               'memory_mb': h.memory_mb, 'chosen_ef_search': best, **sweep[best], 'sweep': sweep,
                               'note': None if m == n else f'built on the first {m:,} items only (build time on this '
                                                           'machine); its build time grows about n log n'}
        del h
    else: res['faiss'] = 'not installed: pip install "transferrec[faiss]"'
    out['indexes'] = res
    del items; gc.collect()
    return out

# ---------------------------------------------------------------------------------------------------------------------
DATA_CHILD = textwrap.dedent(r'''
    import json, re, sys, time, warnings
    warnings.simplefilter('ignore')
    def peak_mb():  # VmHWM: this process's own peak; getrusage's ru_maxrss keeps the parent's peak across fork and exec
        return int(re.search(r'VmHWM:\s+(\d+) kB', open('/proc/self/status').read()).group(1)) / 1024
    t0 = time.perf_counter()
    from transferrec.data import load_csv, clean, split
    path, protocol = sys.argv[1], sys.argv[2]
    t1 = time.perf_counter(); ds = load_csv(path)
    t2 = time.perf_counter(); ds = clean(ds, min_user_interactions=5, min_item_interactions=5)
    t3 = time.perf_counter(); sp = split(ds, protocol, seed=0)
    t4 = time.perf_counter()
    print(json.dumps({'import_seconds': t1 - t0, 'load_seconds': t2 - t1, 'clean_seconds': t3 - t2, 'split_seconds': t4 - t3,
                      'seconds': t4 - t1, 'peak_rss_mb': peak_mb(),
                      'after_clean': {'users': ds.n_users, 'items': ds.n_items, 'interactions': len(ds)},
                      'split': {'train': len(sp.train), 'valid': len(sp.valid), 'test': len(sp.test)}}))
''')

def synthetic_csv(path: Path, n: int, seed: int=0):
    "An ml-20m sized interaction file: ~138k users with long-tailed activity, ~27k items with Zipf-like popularity."
    rng = np.random.default_rng(seed)
    n_users, n_items = max(100, round(138_493 * n / 20_000_263)), 26_744
    act = rng.lognormal(0, 1.2, n_users); per_user = np.maximum(1, np.round(act / act.sum() * n)).astype(np.int64)
    per_user[-1] += n - per_user.sum() if per_user.sum() < n else 0
    users = np.repeat(np.arange(1, n_users + 1), per_user)[:n]
    pop = 1 / (np.arange(n_items) + 20.0) ** 0.9; pop /= pop.sum()
    ids = rng.permutation(np.arange(1, 131_263))[:n_items]     # sparse ids, as in MovieLens
    tmp = path.with_suffix('.tmp')
    with open(tmp, 'w') as f:
        f.write('user_id,item_id,rating,timestamp\n')
        for s in range(0, n, 2_000_000):
            m = min(2_000_000, n - s)
            block = np.column_stack([users[s:s + m], ids[rng.choice(n_items, m, p=pop)],
                                     rng.integers(1, 11, m) * 5, 789_652_009 + rng.integers(0, 638_000_000, m)])
            lines = [f"{u},{i},{r // 10}.{r % 10},{t}" for u, i, r, t in block.tolist()]
            f.write('\n'.join(lines)); f.write('\n')
    os.replace(tmp, path)

def bench_data(a) -> dict:
    n = 2_000_000 if a.quick else 20_000_000
    cache = Path(a.data_dir).expanduser(); cache.mkdir(parents=True, exist_ok=True)
    path = cache/f'interactions-{n}.csv'
    t0 = time.perf_counter()
    made = not path.exists()
    if made: synthetic_csv(path, n)
    out = {'rows': n, 'csv': str(path), 'csv_mb': path.stat().st_size / 1e6,
           'csv_write_seconds': time.perf_counter() - t0 if made else 'reused', 'protocol': a.data_protocol,
           'clean': 'min_user_interactions=5, min_item_interactions=5 (dedupe keeps the latest per pair)'}
    r = subprocess.run([sys.executable, '-c', DATA_CHILD, str(path), a.data_protocol], capture_output=True, text=True,
                       timeout=1500, env={**os.environ, 'OMP_NUM_THREADS': str(torch.get_num_threads())})
    if r.returncode != 0: raise RuntimeError(r.stderr[-2000:])
    out.update(json.loads(r.stdout.strip().splitlines()[-1]))
    return out

# ---------------------------------------------------------------------------------------------------------------------
def bench_distributed(a) -> dict:
    import importlib.util
    from transformers import AutoTokenizer, BertConfig, BertModel
    spec = importlib.util.spec_from_file_location('test_distributed', ROOT/'tests'/'test_distributed.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    tmp = Path(tempfile.mkdtemp(prefix='transferrec-dist-'))
    try:
        tok = AutoTokenizer.from_pretrained(default_encoder_path())
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=128)).save_pretrained(tmp/'tiny')
        tok.save_pretrained(tmp/'tiny')
        (tmp/'worker.py').write_text(mod.WORKER)
        t0 = time.perf_counter()
        mod._run([sys.executable, tmp/'worker.py', tmp/'tiny', tmp/'one.json', '32'], tmp)
        t1 = time.perf_counter()
        mod._run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--nnodes', '1', '--master_addr',
                  '127.0.0.1', '--master_port', str(mod._free_port()), tmp/'worker.py', tmp/'tiny', tmp/'two.json', '16'], tmp)
        t2 = time.perf_counter()
        one, two = (json.loads((tmp/f).read_text()) for f in ('one.json', 'two.json'))
        return {'model': 'tiny BERT (2 layers, 32 wide), two-tower, synthetic 120 users x 100 items, 40 steps, global batch 32',
                'single_process': {**one, 'wall_seconds': t1 - t0}, 'torchrun_2_gloo': {**two, 'wall_seconds': t2 - t1}}
    finally: shutil.rmtree(tmp, ignore_errors=True)

# ---------------------------------------------------------------------------------------------------------------------
def f(x, nd=2): return '-' if x is None else (f'{x:,.{nd}f}' if isinstance(x, float) else f'{x:,}' if isinstance(x, int) else str(x))

def verdict(ok: bool) -> str: return 'met' if ok else '**missed**'

# the targets of the speed benchmarks, read by the sections' own text and by the summary table
T = dict(encode_fp32=1.0, encode_int8=1.8, int8_quality=0.02, cross_encoder=3.0, recommend_p50_ms=5.0, all_users_s=2.0,
         index_p50_ms=10.0, index_recall=0.95, index_build_s=300.0, data_s=90.0, data_mb=4096.0, same_quality=0.05,
         bench_s=1800.0)

def same_quality(s: dict) -> str:
    "Verdict on the truncation section: its paired interval against the tolerance `T['same_quality']`."
    d, tol = s['difference'], T['same_quality'] * s['seed_inputs']['valid_ndcg@10']
    if d['low'] >= -tol: return 'met'
    if d['high'] < 0: return '**missed**'
    needed = s['users'] * ((d['high'] - d['low']) / 2 / tol) ** 2   # an interval's width shrinks as 1/sqrt(users)
    return (f"not resolved: the interval spans both 0 and -{T['same_quality']:.0%}; an interval as narrow as "
            f"±{T['same_quality']:.0%} would need about {needed:,.0f} users, and the validation split has "
            f"{s['users_available']:,}")

def bench_seconds(S: dict) -> float:
    "Seconds of the sections `make bench` runs (the on-request ones excluded)."
    return sum(x['section_seconds'] for k, x in S.items() if k in SECTIONS)

def targets(S: dict, machine: dict) -> list[tuple]:
    "Each target of the speed benchmarks as (what, target, measured, verdict), read from the recorded sections."
    rows = []
    def add(what, target, measured, ok): rows.append((what, target, measured, ok if isinstance(ok, str) else verdict(ok)))
    def sec(name):
        x = S.get(name)
        return None if x is None or 'error' in x else x
    full = lambda x: 'not at full size (--quick)' if x['quick'] else None
    if (s := sec('encoding')):
        q = s['quality']
        add('encoding, fp32 vs sentence-transformers', '>= 1.0x', f"{s['speedup_fp32_vs_st']:.2f}x", s['speedup_fp32_vs_st'] >= T['encode_fp32'])
        add('encoding, int8 vs sentence-transformers', '>= 1.8x', f"{s['speedup_int8_vs_st']:.2f}x", s['speedup_int8_vs_st'] >= T['encode_int8'])
        add('int8 vs fp32 vectors, loo ndcg@10', 'within 2%', f"{q['relative_change'] * 100:+.2f}% (mean of "
            f"{len(q['seeds'])} seed(s); fp32 alone spreads {q['seed_spread_relative'] * 100:.0f}% across them)",
            full(s) or abs(q['relative_change']) <= T['int8_quality'])
    if (s := sec('finetune')):
        c = s['cross_encoder']
        add('cross-encoder training, vs the seed configuration', '>= 3x samples/s', f"{c['speedup']:.1f}x", c['speedup'] >= T['cross_encoder'])
        add('same validation quality: padding', 'same', f"dynamic padding alone {c['speedup_padding_only']:.1f}x, logits "
            f"identical to 512-padding (max diff {c['padding_max_abs_logit_difference']:.0e})",
            c['padding_max_abs_logit_difference'] < 1e-4)
    if (s := sec('truncation')):
        d = s['difference']
        add('same validation quality: truncated histories', f"within {T['same_quality']:.0%}", f"valid ndcg@10 "
            f"{s['truncated']['valid_ndcg@10']:.4f} vs {s['seed_inputs']['valid_ndcg@10']:.4f} ({s['relative_change'] * 100:+.1f}%, "
            f"paired 95% CI {d['low']:+.4f}..{d['high']:+.4f}, {s['users']} users)",
            full(s) or same_quality(s))
    else: add('same validation quality: truncated histories', 'same', 'not measured (`make bench-truncation`)', 'not run')
    if (s := sec('serving')):
        p50, au = s['latency_ms']['explain=False']['p50'], s['all_users']['median_seconds']
        add('recommend() for one user', 'p50 < 5 ms', f"{p50:.2f} ms", p50 < T['recommend_p50_ms'])
        add(f"scoring and ranking all {s['all_users']['users']} users", '< 2 s', f"{au:.2f} s", au < T['all_users_s'])
    if (s := sec('catalogue')) and isinstance(b := s['indexes'].get('ivf_float32'), dict):
        add(f"{s['items']:,}-item index, top-10 query", 'p50 < 10 ms', f"{b['p50_ms']:.2f} ms", full(s) or b['p50_ms'] < T['index_p50_ms'])
        add(f"{s['items']:,}-item index, recall@10 vs exact", '>= 0.95', f"{b['recall@10']:.3f}", full(s) or b['recall@10'] >= T['index_recall'])
        add(f"{s['items']:,}-item index build", '< 300 s', f"{b['build_seconds']:.0f} s", full(s) or b['build_seconds'] < T['index_build_s'])
    if (s := sec('data')):
        add(f"load, clean and split {s['rows']:,} rows", '< 90 s', f"{s['seconds']:.1f} s", full(s) or s['seconds'] < T['data_s'])
        add('... peak memory', '< 4 GB', f"{s['peak_rss_mb']:,.0f} MB", full(s) or s['peak_rss_mb'] < T['data_mb'])
    if (s := sec('distributed')):
        a, b = s['single_process']['test_ndcg@10'], s['torchrun_2_gloo']['test_ndcg@10']
        add('torchrun, 2 processes vs 1, test ndcg@10', 'same quality (within 5%)', f"{b:.4f} vs {a:.4f}", abs(b - a) <= T['same_quality'] * a)
    add('two-tower and cross-encoder at full size, bf16 on a GPU', 'recorded', machine['gpu'] or 'no GPU on this machine',
        'met' if machine['gpu'] else 'not run')
    total = bench_seconds(S)
    add('`make bench`, all sections', '< 30 min', f"{total / 60:.1f} min (sum of the sections)", total < T['bench_s'])
    return rows

def markdown(res: dict) -> str:
    m = res['machine']
    md = ['# Speed and scale benchmarks', '',
          f"Generated by `benchmarks/speed.py{' --quick' if res['quick'] else ''}`; last run {res['date']}; the sections took "
          f"{bench_seconds(res['sections']):.0f} s in all (a section rerun with `--only` "
          "replaces its earlier result; each gives its own start time, duration, torch threads, nice and load). "
          f"Machine of the last run (each section names the CPU it ran on): {m['cpu']}, {m['cores']} cores, "
          f"{m['memory_gb']} GB, {m['os']}; GPU: {m['gpu'] or 'none'}. Versions: "
          + ', '.join(f'{k} {v}' for k, v in m['versions'].items()) + '.', '',
          'The machine is shared: the load average (1, 5, 15 min) before and after each section is given, and '
          'timings on a loaded machine are slower than on an idle one. Each comparison runs both sides in this one '
          'process, alternating after a warm-up; numbers are medians. Reproduce: `make bench` (or '
          '`nice -n 10 python benchmarks/speed.py [--quick]`).', '']
    S = res['sections']
    md += ['## Targets', '', '| what | target | measured | verdict |', '|---|---|---|---|',
           *[f'| {a} | {b} | {c} | {d} |' for a, b, c, d in targets(S, m)], '']
    def head(name, title):
        s = S.get(name)
        md.extend([f'## {title}', ''])
        if s is None: md.extend(['not run', '']); return None
        if 'error' in s: md.extend([f"failed: `{s['error']}`", '']); return None
        md.append(f"started {s['date']}, on {s['cpu']}, "
                  f"{s['section_seconds']:.0f} s, {s['threads']} torch thread(s), nice {s['nice']}, load average before/after: "
                  f"{s['load_before']} / {s['load_after']}{', --quick sizes' if s['quick'] else ''}"); md.append('')
        return s
    if (s := head('encoding', 'Encoding the ml-100k item texts')):
        tp = s['texts_per_second']
        md += [f"{s['texts']} texts, batch {s['batch_size']}, max {s['max_length']} tokens, "
               "no cache, the bundled all-MiniLM-L6-v2 in both libraries.", '',
               '| encoder | median wall s | texts/s | wall ratio vs sentence-transformers | median CPU s | CPU-time ratio | target |',
               '|---|---|---|---|---|---|---|',
               f"| sentence-transformers `encode` | {f(s['median_seconds']['sentence_transformers'])} | {f(tp['sentence_transformers'], 0)} | 1.00 | "
               f"{f(s['cpu_median_seconds']['sentence_transformers'])} | 1.00 | |",
               f"| transferrec `encode_texts` fp32 | {f(s['median_seconds']['transferrec_fp32'])} | {f(tp['transferrec_fp32'], 0)} | "
               f"{f(s['speedup_fp32_vs_st'])}x | {f(s['cpu_median_seconds']['transferrec_fp32'])} | {f(s['cpu_speedup_fp32_vs_st'])}x | "
               f">= 1.0x: wall {verdict(s['speedup_fp32_vs_st'] >= T['encode_fp32'])}, CPU {verdict(s['cpu_speedup_fp32_vs_st'] >= T['encode_fp32'])} |",
               f"| transferrec `encode_texts` int8 (`quantize=True`) | {f(s['median_seconds']['transferrec_int8'])} | "
               f"{f(tp['transferrec_int8'], 0)} | {f(s['speedup_int8_vs_st'])}x | {f(s['cpu_median_seconds']['transferrec_int8'])} | "
               f"{f(s['cpu_speedup_int8_vs_st'])}x | >= 1.8x: wall {verdict(s['speedup_int8_vs_st'] >= T['encode_int8'])}, CPU {verdict(s['cpu_speedup_int8_vs_st'] >= T['encode_int8'])} |", '',
               f"Wall and CPU time of this process per pass, {len(s['seconds']['sentence_transformers'])} alternating passes per side: "
               "with one thread on a shared machine, CPU time counts only the work done, wall time also the waits for a core. "
               "Per pass (wall s): " + '; '.join(f"{k} " + ', '.join(f'{x:.2f}' for x in v) for k, v in s['seconds'].items()) + '.', '',
               f"Same vectors: minimum cosine fp32 vs sentence-transformers {s['min_cosine_fp32_vs_st']:.6f}; int8 vs fp32 "
               f"{s['min_cosine_int8_vs_fp32']:.4f}."]
        q = s['quality']
        per_seed = '; '.join(f"seed {sd}: {a:.4f} / {b:.4f}" for sd, a, b in zip(q['seeds'], q['test_ndcg@10']['fp32'], q['test_ndcg@10']['int8']))
        md += ['', f"Quality of int8 vectors: {q['model']} trained {q['epochs']} epochs (patience {q['patience']}) on each "
               f"vector set with the same seeds, `loo` test ndcg@10 fp32 / int8: {per_seed}. Mean fp32 "
               f"{q['mean_test_ndcg@10']['fp32']:.4f}, int8 {q['mean_test_ndcg@10']['int8']:.4f}: relative change "
               f"{q['relative_change'] * 100:+.2f}% (target within 2%: {verdict(abs(q['relative_change']) <= T['int8_quality'])}); "
               f"paired changes " + ', '.join(f'{x * 100:+.1f}%' for x in q['paired_relative_changes'])
               + f"; the fp32 runs alone spread {q['seed_spread_relative'] * 100:.1f}% of their mean across seeds, so "
               "a 2% difference is below what this many runs can resolve.", '',
               f"Without retraining: the fp32-trained model (seed {q['seeds'][0]}) scoring with int8 vectors of the same "
               f"catalogue gets {q['fp32_model_scored_with_int8_vectors']:.4f} ({q['swap_relative_change'] * 100:+.1f}%): "
               "the adaptor's whitening magnifies the quantisation error, so a catalogue is encoded with the encoder its "
               f"model was trained on. Each item's 10 nearest items by text cosine: int8 keeps "
               f"{q['neighbour_overlap@10'] * 100:.1f}% of the fp32 ones.", '']
    if (s := head('finetune', 'Training throughput (ml-100k loo)')):
        c = s['cross_encoder']; p, d = c['padded_512'], c['dynamic']
        md += ['| strategy | setting | samples/s |', '|---|---|---|',
               f"| sequential (text) | batch {s['sequential']['batch_size']} windows, {s['sequential']['epochs']} epochs | "
               f"{f(s['sequential']['windows_per_second'], 0)} windows/s |",
               f"| two-tower | {s['two_tower']['config']}, {s['two_tower']['steps']} steps, Trainer | "
               f"{f(s['two_tower']['pairs_per_second_median_step'], 1)} pairs/s (Trainer overall {f(s['two_tower']['pairs_per_second_trainer'], 1)}) |",
               f"| cross-encoder, seed configuration | pad to {p['max_length']}, last {p['history_items']} items, {p['tokens_per_batch']:,} tokens/batch | "
               f"{f(p['pairs_per_second'], 2)} pairs/s |",
               f"| cross-encoder, transferrec's inputs padded to 512 | truncation to "
               f"{d['max_length']}, last {d['history_items']} items, then padding to 512 | "
               f"{f(c['padded_512_short']['pairs_per_second'], 2)} pairs/s |",
               f"| cross-encoder, transferrec | dynamic padding, truncation to {d['max_length']}, last {d['history_items']} items, "
               f"{d['tokens_per_batch']:,} tokens/batch | {f(d['pairs_per_second'], 1)} pairs/s |", '',
               f"Cross-encoder speed-up: **{c['speedup']:.1f}x** (target >= 3x: {verdict(c['speedup'] >= T['cross_encoder'])}); "
               f"median optimizer-step time after the first step of each run, {p['runs']} alternating run(s) per side, "
               f"{c['config']}.", '']
        md += [f"Validation quality: dynamic padding alone (the same truncated pairs, padded to 512 vs to the batch's longest) "
               f"is **{c['speedup_padding_only']:.1f}x** faster and changes no score: the trained model's logits on "
               f"{c['padding_check_pairs']} pairs differ by at most {c['padding_max_abs_logit_difference']:.1e} between the two "
               "paddings (padding is masked out of attention and pooling), so its validation quality is the same by "
               f"construction ({verdict(c['speedup_padding_only'] >= T['cross_encoder'])} at >= 3x). Truncating histories from "
               f"{p['history_items']} to {d['history_items']} items changes the inputs; its effect on validation quality is the "
               "next section's.", '']
    if (s := head('truncation', 'Cross-encoder validation quality: truncated histories vs the seed\'s')):
        t, o, d = s['truncated'], s['seed_inputs'], s['difference']
        md += [f"{s['config']} re-ranking the top {s['top_n']} of {s['retriever'].upper()}, trained {s['steps']} steps on the same "
               f"{t['pairs']:,} pairs and seed with each input, then scored on "
               f"{'all ' if s['users'] == s['users_available'] else 'the same '}{s['users']} validation users. "
               "Dynamic padding on both sides.", '',
               '| inputs | valid ndcg@10 | valid recall@10 | train s | score s |', '|---|---|---|---|---|',
               *[f"| last {r['history_items']} items, {r['max_length']} tokens | {r['valid_ndcg@10']:.4f} | "
                 f"{r['valid_recall@10']:.4f} | {r['train_seconds']:.0f} | {r['score_seconds']:.0f} |" for r in (t, o)],
               f"| {s['retriever'].upper()} alone (no re-ranking) | {s['retriever_valid_ndcg@10']:.4f} | | | |", '',
               f"Truncated minus seed inputs, per user: {d['mean']:+.4f} ndcg@10 ({s['relative_change'] * 100:+.1f}%), "
               f"bootstrap 95% interval {d['low']:+.4f} to {d['high']:+.4f}. Met when the whole interval lies above "
               f"-{T['same_quality']:.0%} of the seed inputs' ndcg@10, missed when it lies below zero: "
               f"{'not judged at --quick sizes' if s['quick'] else same_quality(s)}.", '']
    if (s := head('serving', 'Serving: `Recommender.recommend` on ml-100k')):
        L = s['latency_ms']; au = s['all_users']
        md += [f"{s['model']}, one user per call, k={s['k']}, {s['calls']} calls each, item vectors cached.", '',
               '| call | p50 ms | p90 ms | p99 ms | target |', '|---|---|---|---|---|',
               f"| recommend(user_id, explain=False) | {f(L['explain=False']['p50'])} | {f(L['explain=False']['p90'])} | {f(L['explain=False']['p99'])} | "
               f"p50 < 5 ms: {verdict(L['explain=False']['p50'] < T['recommend_p50_ms'])} |",
               f"| recommend(user_id, explain=True) | {f(L['explain=True']['p50'])} | {f(L['explain=True']['p90'])} | {f(L['explain=True']['p99'])} | "
               f"(reported) p50 < 5 ms: {verdict(L['explain=True']['p50'] < T['recommend_p50_ms'])} |", '',
               f"Scoring and ranking (top 10, seen items excluded) all {au['users']} users over {au['items']} items: "
               f"{au['median_seconds']:.3f} s (target < 2 s: {verdict(au['median_seconds'] < T['all_users_s'])}); the whole `evaluate` "
               f"(all metrics): {au['evaluate_median_seconds']:.3f} s.", '']
    if (s := head('catalogue', 'Large catalogues: `transferrec.retrieval.VectorIndex`')):
        md += [f"Synthetic catalogue: {s['items']:,} x {s['dim']} float32 vectors, {s['structure']}; {s['queries']} queries, each "
               f"{s['query_model']}; top-{s['k']}, one query per call. "
               "Recall@10 against exact search.", '',
               '| index | build s | memory MB | p50 ms | p99 ms | recall@10 | settings |', '|---|---|---|---|---|---|---|']
        for name, r in s['indexes'].items():
            if isinstance(r, str): md.append(f'| {name} | {r} ||||||'); continue
            sets = (f"nlist {r['nlist']}, nprobe {r['chosen_nprobe']}" if 'nlist' in r else
                    f"M 32, ef_construction {r['ef_construction']}, ef_search {r['chosen_ef_search']}, {r['items_indexed']:,} items" if 'chosen_ef_search' in r else 'blocked matmul + topk')
            md.append(f"| {name} | {f(r['build_seconds'], 1)} | {f(r['memory_mb'], 0)} | {f(r['p50_ms'])} | {f(r['p99_ms'])} | "
                      f"{f(r['recall@10'], 3)} | {sets} |")
        best = [r for k, r in s['indexes'].items() if k.startswith('ivf') and isinstance(r, dict)]
        if best:
            b = s['indexes'].get('ivf_float32')
            md += ['', f"Targets at {s['items']:,} items (IVF float32): p50 < 10 ms {verdict(b['p50_ms'] < T['index_p50_ms'])}, recall@10 >= 0.95 "
                   f"{verdict(b['recall@10'] >= T['index_recall'])}, build < 300 s {verdict(b['build_seconds'] < T['index_build_s'])}."
                   + (' Measured at 200,000 items (`--quick`): not the 1,000,000-item target size.' if s['items'] < 1_000_000 else '')]
            for name in ('ivf_float32', 'ivf_float16'):
                r = s['indexes'].get(name)
                if r: md.append(f"\n{name} nprobe sweep: " + '; '.join(f"{p}: recall {v['recall@10']:.3f}, p50 {v['p50_ms']:.2f} ms" for p, v in r['sweep'].items()))
            h = s['indexes'].get('hnsw_float32')
            if h: md.append(f"\nhnsw ef_search sweep: " + '; '.join(f"{p}: recall {v['recall@10']:.3f}, p50 {v['p50_ms']:.2f} ms" for p, v in h['sweep'].items())
                            + (f". {h['note']}" if h.get('note') else ''))
        md.append('')
    if (s := head('data', 'Data pipeline at scale')):
        md += [f"`load_csv` + `clean` ({s['clean']}) + `split('{s['protocol']}')` of a synthetic {s['rows']:,}-row CSV "
               f"({s['csv_mb']:.0f} MB, ml-20m shaped), in a fresh subprocess; peak memory is its own peak resident set size (VmHWM).", '',
               '| stage | seconds |', '|---|---|',
               *[f"| {k.replace('_seconds', '')} | {s[k]:.1f} |" for k in ('load_seconds', 'clean_seconds', 'split_seconds')],
               f"| **total** | **{s['seconds']:.1f}** |", '',
               f"Peak memory {s['peak_rss_mb']:,.0f} MB. Targets: < 90 s {verdict(s['seconds'] < T['data_s'])}, < 4 GB {verdict(s['peak_rss_mb'] < T['data_mb'])}"
               + (' (measured at 2,000,000 rows with `--quick`, not the 20,000,000-row target size).' if s['rows'] < 20_000_000 else '.'),
               f"After cleaning: {s['after_clean']['users']:,} users, {s['after_clean']['items']:,} items, {s['after_clean']['interactions']:,} interactions.", '']
    if (s := head('distributed', 'Multi-process training (CPU, gloo)')):
        o, t = s['single_process'], s['torchrun_2_gloo']
        md += [f"{s['model']}: one process with batch 32 vs `torchrun --nproc_per_node 2` with batch 16 per process.", '',
               '| run | steps | best valid ndcg@10 | test ndcg@10 | zero-shot valid ndcg@10 | train s | wall s |', '|---|---|---|---|---|---|---|',
               *[f"| {n} | {r['steps']} | {r['best_valid_ndcg@10']:.4f} | {r['test_ndcg@10']:.4f} | {r['zero_shot_valid_ndcg@10']:.4f} | "
                 f"{r['train_seconds']:.1f} | {r['wall_seconds']:.1f} |" for n, r in (('1 process', o), ('torchrun, 2 gloo processes', t))], '']
    md += [LAUNCH]
    return '\n'.join(md) + '\n'

LAUNCH = '''## Multi-GPU and multi-node training

`two-tower` and `cross-encoder` train through the Hugging Face `Trainer`, so a script that calls
`Recommender('two-tower', **TWO_TOWER_GPU).fit(split)` runs unchanged under a launcher; `batch_size` is per process.

```bash
torchrun --nproc_per_node 2 train.py                                   # 2 CPU processes (gloo), as tests/test_distributed.py
accelerate launch --multi_gpu --num_processes 8 train.py               # 8 GPUs of one machine (NCCL)
accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank 0 \\
    --main_process_ip 10.0.0.1 --main_process_port 29500 train.py      # 2 machines x 8 GPUs; --machine_rank 1 on the other
torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 --master_addr 10.0.0.1 --master_port 29500 train.py
```

Save from rank 0 only (`if int(os.environ.get('RANK', 0)) == 0: rec.save(path)`). See `nbs/04a_retrieval.ipynb`.
'''

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='smaller sizes (recorded in the results)')
    p.add_argument('--only', default=None, help=f"comma-separated sections of {', '.join(SECTIONS + ON_REQUEST)}")
    p.add_argument('--threads', type=int, default=1, help='torch (and FAISS) threads for every section')
    p.add_argument('--hnsw-items', type=int, default=200_000, help='items in the HNSW index (its build is slow on 2 cores)')
    p.add_argument('--data-dir', default=str(Path(tempfile.gettempdir())/'transferrec-bench'), help='where the synthetic CSV is written once')
    p.add_argument('--data-protocol', default='random', choices=['random', 'loo', 'cold'])
    p.add_argument('--out', default=str(HERE), help='folder for results.json and results.md')
    p.add_argument('--markdown-only', action='store_true', help='only rewrite results.md from results.json')
    a = p.parse_args()
    if a.markdown_only:
        res = json.loads((Path(a.out)/'results.json').read_text())
        (Path(a.out)/'results.md').write_text(markdown(res)); return
    only = SECTIONS if not a.only else tuple(s.strip() for s in a.only.split(','))
    bad = [s for s in only if s not in SECTIONS + ON_REQUEST]
    if bad: p.error(f"unknown section(s) {bad}; choose from {SECTIONS + ON_REQUEST}")
    torch.set_num_threads(a.threads)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    prev = json.loads((out/'results.json').read_text())['sections'] if (out/'results.json').exists() else {}
    kept = {k: v for k, v in prev.items() if a.only or k in ON_REQUEST}   # a full run keeps the on-request sections
    res = {'date': time.strftime('%Y-%m-%d %H:%M'), 'quick': a.quick, 'machine': machine(),
           'settings': {k: v for k, v in vars(a).items() if k != 'out'}, 'sections': kept}
    t_all = time.perf_counter()
    for name in only:
        print(f'[{time.strftime("%H:%M:%S")}] {name} (load {load()})', flush=True)
        before, t0, started = load(), time.perf_counter(), time.strftime('%Y-%m-%d %H:%M')
        try: r = globals()[f'bench_{name}'](a)
        except Exception as e:
            import traceback; traceback.print_exc()
            r = {'error': f'{type(e).__name__}: {str(e)[-500:]}'}
        r.update(date=started, load_before=before, load_after=load(), section_seconds=time.perf_counter() - t0, quick=a.quick,
                 cpu=res['machine']['cpu'], threads=torch.get_num_threads(), nice=os.nice(0))
        res['sections'][name] = r
        print(json.dumps({k: v for k, v in r.items() if k not in ('raw', 'seconds', 'sweep')}, default=str)[:1500], flush=True)
        gc.collect()
    res['seconds'] = time.perf_counter() - t_all
    res['peak_rss_mb'] = rss_mb()
    (out/'results.json').write_text(json.dumps(res, indent=1, default=str))
    (out/'results.md').write_text(markdown(res))
    print(f'wrote {out/"results.json"} and {out/"results.md"} in {res["seconds"]:.0f} s')

if __name__ == '__main__': main()
