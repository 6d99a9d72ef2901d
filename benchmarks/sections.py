"""The sections of the speed benchmark: each `bench_<name>(a)` measures one thing side by side with its alternative and
returns a JSON-ready dict (`a`: the options of `benchmarks/speed.py`)."""
import contextlib, functools, gc, importlib.util, json, os, shutil, sys, tempfile, textwrap, time
from pathlib import Path
from harness import T, alternate, median, run_child   # first: it sets the offline environment before transformers loads
import numpy as np, torch
import transferrec.crossencoder as ce, transferrec.twotower as tt
from transferrec.baselines import EASE
from transferrec.crossencoder import CrossEncoderReranker, CROSS_ENCODER_TUTORIAL, PairTextCollator
from transferrec.data import load_movielens, split, item_text
from transferrec.encoders import load_encoder, encode_texts, default_encoder_path
from transferrec.metrics import evaluate, rank_metrics, topk
from transferrec.records import bootstrap_ci
from transferrec.sequential import SequentialRecommender, history_windows
from transferrec.twotower import TwoTowerRecommender, TWO_TOWER_TUTORIAL

ROOT = Path(__file__).resolve().parent.parent

@functools.cache
def ml100k(): return load_movielens('ml-100k')

@functools.cache
def loo(): return split(ml100k(), 'loo', seed=0)

# ---------------------------------------------------------------------------------------------------------------------
def bench_encoding(a) -> dict:
    "encode_texts (fp32 and int8) vs sentence-transformers on the ml-100k item texts, and the quality of int8 vectors."
    texts = item_text(ml100k().items)
    enc32, enc8 = load_encoder(device='cpu'), load_encoder(quantize=True)
    out = encoding_speed(texts[:400] if a.quick else texts, enc32, enc8, rounds=3 if a.quick else 5)
    out['quality'] = int8_quality(a, texts, enc32, enc8)
    return out

def encoding_speed(timed: list, enc32, enc8, rounds: int) -> dict:
    "Wall and CPU time of encoding `timed` with sentence-transformers and with `encode_texts` (fp32, int8), alternating."
    from sentence_transformers import SentenceTransformer
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
                  rounds=rounds, cpu=cpu)
    med, cmed = {k: median(v) for k, v in t.items()}, {k: median(v) for k, v in cpu.items()}
    return {'texts': len(timed), 'batch_size': bs, 'max_length': 64, 'cache': False,
            'seconds': t, 'median_seconds': med, 'texts_per_second': {k: len(timed) / v for k, v in med.items()},
            'speedup_fp32_vs_st': med['sentence_transformers'] / med['transferrec_fp32'],
            'speedup_int8_vs_st': med['sentence_transformers'] / med['transferrec_int8'],
            'cpu_seconds': cpu, 'cpu_median_seconds': cmed,
            'cpu_speedup_fp32_vs_st': cmed['sentence_transformers'] / cmed['transferrec_fp32'],
            'cpu_speedup_int8_vs_st': cmed['sentence_transformers'] / cmed['transferrec_int8'],
            'min_cosine_fp32_vs_st': cos(v_32, v_st), 'min_cosine_int8_vs_fp32': cos(ours(enc8)(), v_32)}

def int8_quality(a, texts: list, enc32, enc8) -> dict:
    "The same small sequential model trained on fp32 vs int8 vectors of the whole catalogue, paired seeds."
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
    swapped = evaluate(with_text_vectors(models['fp32', seeds[0]], vecs['int8'], sp), sp, k=10)['ndcg@10']
    mean = {k: float(np.mean(v)) for k, v in q.items()}
    return {'protocol': 'loo', 'model': "SequentialRecommender('text', text_vectors=...)", **budget, 'seeds': list(seeds),
            'test_ndcg@10': q, 'mean_test_ndcg@10': mean,
            'relative_change': (mean['int8'] - mean['fp32']) / mean['fp32'],
            'paired_relative_changes': [(b - a) / a for a, b in zip(q['fp32'], q['int8'])],
            'seed_spread_relative': (max(q['fp32']) - min(q['fp32'])) / mean['fp32'],
            'fp32_model_scored_with_int8_vectors': swapped,
            'swap_relative_change': (swapped - q['fp32'][0]) / q['fp32'][0],
            'neighbour_overlap@10': neighbour_overlap(vecs['fp32'], vecs['int8'])}

def with_text_vectors(m: SequentialRecommender, vectors: np.ndarray, sp) -> SequentialRecommender:
    "The trained text model `m` (its weights, adaptor included) reading `vectors` as the catalogue's text vectors."
    twin = SequentialRecommender(**m.config, text_vectors=vectors, num_threads=m.num_threads, progress=False)
    twin.build_network(sp)
    twin.net.load_state_dict({**m.net.state_dict(), 'text': twin.net.text})
    twin.net.eval(); twin.split = sp
    return twin

def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int=10) -> float:
    "Training-free fidelity: the mean share of each item's k nearest items (cosine, itself excluded) kept by `b`."
    def nn(v):
        v = v / np.linalg.norm(v, axis=1, keepdims=True); s = v @ v.T; np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1, kind='stable')[:, :k]
    x, y = nn(a), nn(b)
    return float(np.mean([len(set(r) & set(t)) / k for r, t in zip(x.tolist(), y.tolist())]))

# ---------------------------------------------------------------------------------------------------------------------
class StepTimer:
    "A TrainerCallback that records the wall time of every optimizer step."
    def __init__(self): self.times, self.started = [], None
    def __getattr__(self, name):  # every other TrainerCallback event: no-op
        if name.startswith('on_'): return lambda *a, **k: None
        raise AttributeError(name)
    def on_step_begin(self, *a, **k): self.started = time.perf_counter()
    def on_step_end(self, *a, **k):
        if self.started is not None: self.times.append(time.perf_counter() - self.started)

@contextlib.contextmanager
def replaced(module, name: str, value):
    "`module.name` is `value` inside the block (a strategy builds its Trainer and collator itself)."
    base = getattr(module, name)
    setattr(module, name, value)
    try: yield
    finally: setattr(module, name, base)

def timed_trainer(module, cls_name: str, timer: StepTimer):
    "Let the strategy's Trainer class also call `timer`."
    class Timed(getattr(module, cls_name)):
        def __init__(self, *args, callbacks=None, **kw): super().__init__(*args, callbacks=[*(callbacks or []), timer], **kw)
    return replaced(module, cls_name, Timed)

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

def bench_finetune(a) -> dict:
    "Training throughput of every strategy; the cross-encoder with dynamic padding vs padding to 512 tokens."
    sp, th = loo(), torch.get_num_threads()
    out = {'dataset': 'ml-100k loo', 'sequential': sequential_throughput(sp, th), 'two_tower': two_tower_throughput(a, sp, th)}
    gc.collect()
    out['cross_encoder'] = cross_encoder_throughput(a, sp, th)
    return out

def sequential_throughput(sp, th: int) -> dict:
    "Training windows per second of the sequential text model over a few epochs, validation time subtracted."
    seq = SequentialRecommender('text', epochs=2, patience=99, seed=0, progress=False, num_threads=th)
    seq.text_vectors = encode_texts(item_text(ml100k().items), load_encoder(), progress=False)
    seq.fit(sp)
    t0 = time.perf_counter(); evaluate(seq, sp, k=10, on='valid'); ev = time.perf_counter() - t0
    windows = len(history_windows(sp.sequences('train'), seq.config['max_len'])[0])
    train_s = seq.history[-1]['seconds'] - ev * len(seq.history)
    return {'windows': windows, 'epochs': len(seq.history), 'batch_size': seq.config['batch_size'],
            'windows_per_second': windows * len(seq.history) / train_s}

def two_tower_throughput(a, sp, th: int) -> dict:
    "Pairs per second of the tutorial two-tower model through the Trainer."
    steps, timer = 8 if a.quick else 24, StepTimer()
    with timed_trainer(tt, 'TwoTowerTrainer', timer):
        two = TwoTowerRecommender(**{**TWO_TOWER_TUTORIAL, 'max_steps': steps, 'eval_steps': 10_000, 'eval_users': 30,
                                     'patience': None}, num_threads=th, progress=False).fit(sp)
    return {'config': 'TWO_TOWER_TUTORIAL', 'steps': steps, 'batch_size': TWO_TOWER_TUTORIAL['batch_size'],
            'trainable_layers': TWO_TOWER_TUTORIAL['trainable_layers'],
            'pairs_per_second_trainer': two.train_stats_['samples_per_second'],
            'pairs_per_second_median_step': TWO_TOWER_TUTORIAL['batch_size'] / median(timer.times[1:])}

def cross_encoder_throughput(a, sp, th: int) -> dict:
    """Dynamic padding + short histories (the tutorial settings) vs the seed's configuration: every pair padded to the
    tokenizer's 512 tokens, histories of the last 50 items; alternating runs, median optimizer-step time."""
    bs = CROSS_ENCODER_TUTORIAL['batch_size']
    short = dict(history_items=CROSS_ENCODER_TUTORIAL['history_items'], max_length=CROSS_ENCODER_TUTORIAL['max_length'])
    sides = {'padded_512': dict(history_items=50, max_length=512, steps=3, collator=PadToMax),   # the seed's configuration
             'padded_512_short': dict(**short, steps=3, collator=PadToMax),   # the same inputs as `dynamic`, padded to 512
             'dynamic': dict(**short, steps=8 if a.quick else 12, collator=PairTextCollator)}
    runs, tokens = {k: [] for k in sides}, {}
    for r in range(1 if a.quick else 2):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            timer = StepTimer()
            m = train_cross_encoder(sp, th, sides[name], timer)
            pairs = m.training_pairs(sp)
            feats = [pairs[i] for i in range(bs)]
            tokens[name] = int(m.collator(feats)['input_ids'].numel())
            runs[name].append({'step_seconds': timer.times, 'samples_per_second_trainer': m.train_stats_['samples_per_second']})
            if name == 'dynamic': same_logits = padding_changes_nothing(m, feats, PadToMax)
            del m; gc.collect()
    res = {name: step_summary(sides[name], rs, tokens[name], bs) for name, rs in runs.items()}
    return {'config': 'CROSS_ENCODER_TUTORIAL (batch 32, top 3 layers trained)', **res,
            'speedup': res['dynamic']['pairs_per_second'] / res['padded_512']['pairs_per_second'],
            'speedup_padding_only': res['dynamic']['pairs_per_second'] / res['padded_512_short']['pairs_per_second'],
            'padding_max_abs_logit_difference': same_logits, 'padding_check_pairs': bs}

def train_cross_encoder(sp, th: int, side: dict, timer: StepTimer) -> CrossEncoderReranker:
    "The tutorial cross-encoder trained `side['steps']` steps on `side`'s inputs through its collator, each step timed."
    with replaced(ce, 'PairTextCollator', side['collator']), timed_trainer(ce, 'CrossEncoderTrainer', timer):
        return CrossEncoderReranker(**{**CROSS_ENCODER_TUTORIAL, 'retriever': 'pop', 'history_items': side['history_items'],
                                       'max_length': side['max_length'], 'max_steps': side['steps'], 'eval_steps': 10_000,
                                       'eval_users': 10, 'top_n': 5, 'patience': None},
                                    num_threads=th, progress=False).fit(sp)

def step_summary(side: dict, runs: list[dict], tokens: int, bs: int) -> dict:
    "One cross-encoder side: its inputs and the median optimizer-step time of its runs."
    steps_t = [x for r in runs for x in r['step_seconds'][1:]]          # the first step of each run is the warm-up
    return {'history_items': side['history_items'], 'max_length': side['max_length'],
            'padding': 'max_length' if side['collator'] is PadToMax else 'longest in batch',
            'tokens_per_batch': tokens, 'steps_per_run': side['steps'], 'runs': len(runs),
            'median_step_seconds': median(steps_t), 'pairs_per_second': bs / median(steps_t),
            'pairs_per_second_trainer': median([r['samples_per_second_trainer'] for r in runs]), 'raw': runs}

def padding_changes_nothing(m, pairs: list[dict], padded) -> float:
    "Largest |logit difference| of a trained cross-encoder over `pairs`, dynamic vs 512-token padding."
    feats = [{k: v for k, v in f.items() if k != 'labels'} for f in pairs]
    wide = padded(m.tokenizer, m.config['max_length'], m.config['num_labels'])
    m.model.eval()
    with torch.inference_mode(): a, b = (m.model(**c(feats)).logits for c in (m.collator, wide))
    return float((a - b).abs().max())

# ---------------------------------------------------------------------------------------------------------------------
def bench_truncation(a) -> dict:
    "Re-ranked valid ndcg@10 of the cross-encoder with truncated histories vs the seed's, paired over the same users."
    sp = loo()
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
        out[name], per_user[name] = reranked(sp, ease, s, steps, users, rel, seen)
        print(name, out[name], flush=True)
    diff = per_user['truncated'] - per_user['seed_inputs']
    out['difference'] = dict(zip(('mean', 'low', 'high'), bootstrap_ci(diff)))
    out['relative_change'] = out['difference']['mean'] / out['seed_inputs']['valid_ndcg@10']
    return out

def reranked(sp, ease, inputs: dict, steps: int, users, rel, seen) -> tuple[dict, np.ndarray]:
    "The tutorial cross-encoder with `inputs` re-ranking `ease`: its valid metrics on `users` and their per-user ndcg@10."
    t0 = time.perf_counter()
    m = CrossEncoderReranker(**{**CROSS_ENCODER_TUTORIAL, **inputs, 'max_steps': steps, 'eval_steps': 10_000, 'patience': None},
                             retriever=ease, fit_retriever=False, num_threads=torch.get_num_threads(), progress=False).fit(sp)
    t1 = time.perf_counter()
    r = rank_metrics(m.score(users, on='valid'), rel, k=10, exclude=seen, metrics=['ndcg', 'recall'])
    out = {**inputs, 'valid_ndcg@10': float(np.nanmean(r['ndcg@10'])), 'valid_recall@10': float(np.nanmean(r['recall@10'])),
           'train_seconds': t1 - t0, 'score_seconds': time.perf_counter() - t1, 'pairs': m.n_pairs_}
    del m; gc.collect()
    return out, r['ndcg@10']

# ---------------------------------------------------------------------------------------------------------------------
@functools.cache
def trained_sequential(quick: bool):
    "A sequential text model on ml-100k loo with a small budget (cached for the run)."
    from transferrec.recommend import Recommender
    vec = encode_texts(item_text(ml100k().items), load_encoder(), progress=False)
    return Recommender('sequential', item_repr='text', text_vectors=vec, epochs=2 if quick else 5,
                       patience=3, seed=0, progress=False).fit(loo())

def bench_serving(a) -> dict:
    "Recommender.recommend latency for one user, and scoring + ranking all users (ml-100k)."
    rec, sp = trained_sequential(a.quick), loo()
    n = 200
    out = {'model': 'sequential text, ml-100k loo, small budget', 'calls': n, 'k': 10, 'item_vectors_cached': True,
           'latency_ms': recommend_latency(rec, n)}
    def all_users():
        s = rec.score(np.arange(sp.n_users), on='test')
        s[sp.seen('test').toarray().astype(bool)] = -np.inf
        return topk(s, 10)
    t = alternate({'score_and_rank_all_users': all_users}, rounds=5)['score_and_rank_all_users']
    t2 = alternate({'evaluate': lambda: evaluate(rec.model, sp, k=10)}, rounds=3)['evaluate']
    out['all_users'] = {'users': int(sp.n_users), 'items': int(sp.n_items), 'median_seconds': median(t), 'seconds': t,
                        'evaluate_median_seconds': median(t2)}
    return out

def recommend_latency(rec, n: int) -> dict:
    "Percentiles (ms) of `n` one-user recommend calls with and without explanations, alternating, after a warm-up."
    users = rec.user_ids
    lat = {'explain=False': [], 'explain=True': []}
    for u in users[:10]: rec.recommend(user_id=u, k=10, explain=False); rec.recommend(user_id=u, k=10)
    for j in range(n):
        u = users[(j * 7) % len(users)]
        for flag in ((False, True) if j % 2 == 0 else (True, False)):
            t0 = time.perf_counter(); rec.recommend(user_id=u, k=10, explain=flag)
            lat[f'explain={flag}'].append(time.perf_counter() - t0)
    pct = lambda xs, p: float(np.percentile(xs, p) * 1000)
    return {k: {'p50': pct(v, 50), 'p90': pct(v, 90), 'p99': pct(v, 99)} for k, v in lat.items()}

# ---------------------------------------------------------------------------------------------------------------------
def unit(x): return x / np.linalg.norm(x, axis=1, keepdims=True)

def clustered(n: int, d: int, seed: int, topics: int=50, per_cluster: int=100, noise: float=1.0, chunk: int=100_000) -> np.ndarray:
    "Unit vectors in two levels of clusters (topics -> clusters of ~`per_cluster` items -> items), like text vectors."
    g = np.random.default_rng(12345)
    t = unit(g.standard_normal((topics, d), dtype=np.float32))
    nc = max(1, n // per_cluster)
    c = unit(t[g.integers(0, topics, nc)] + noise * g.standard_normal((nc, d), dtype=np.float32) / np.sqrt(d))
    rng, out = np.random.default_rng(seed), np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        out[s:s + m] = unit(c[rng.integers(0, nc, m)] + noise * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d))
    return out

def user_queries(items: np.ndarray, n: int, seed: int, mix: int=3) -> np.ndarray:
    "Query vectors that mix `mix` random catalogue items plus a little noise (a user who liked a few things)."
    rng = np.random.default_rng(seed)
    return unit(items[rng.integers(0, len(items), (n, mix))].sum(1)
                + 0.5 * rng.standard_normal((n, items.shape[1]), dtype=np.float32) / np.sqrt(items.shape[1]))

def latency(ix, qs) -> dict:
    "p50 and p99 milliseconds of one-query top-10 searches of `ix`, after a warm-up."
    ix.search(qs[:3], 10)
    ts = []
    for q in qs:
        t = time.perf_counter(); ix.search(q[None], 10); ts.append(time.perf_counter() - t)
    return {'p50_ms': float(np.percentile(ts, 50) * 1000), 'p99_ms': float(np.percentile(ts, 99) * 1000)}

def first_reaching_target(sweep: dict):
    "The smallest setting of a sweep whose recall@10 meets the target (the largest when none does)."
    ok = [p for p, r in sweep.items() if r['recall@10'] >= T['index_recall']]
    return min(ok) if ok else max(sweep)

@contextlib.contextmanager
def faiss_threads(n: int):
    "FAISS on `n` threads inside the block: indexes are built on every core, as FAISS does by default, and searched on `--threads`."
    import faiss
    before = faiss.omp_get_max_threads(); faiss.omp_set_num_threads(n)
    try: yield
    finally: faiss.omp_set_num_threads(before)

BUILD_THREADS = os.cpu_count()

def realistic(n: int, seed: int, kind: str='gaussian') -> np.ndarray:
    "Vectors as hard as real text vectors: `benchmarks/scale.py`'s generator (the ml-100k MiniLM vectors' mean and covariance)."
    from scale import Generator, real_vectors
    gen = Generator(real_vectors(), kind)
    return np.concatenate([gen(min(100_000, n - s), [seed, s]) for s in range(0, n, 100_000)])

def bench_catalogue(a) -> dict:
    "transferrec.retrieval indexes on a synthetic catalogue of 1,000,000 x 384 realistic vectors (200,000 with --quick)."
    from transferrec.retrieval import faiss_available
    n, d = (200_000 if a.quick else 1_000_000), 384
    t0 = time.perf_counter()
    if a.catalogue_vectors == 'clustered':
        items, queries = clustered(n, d, seed=0), None
        queries = user_queries(items, 200, seed=1)
        structure, query_model = '50 topics -> clusters of ~100 items -> items (unit vectors, noise 1.0)', 'unit(sum of 3 random catalogue items + noise)'
    else:
        items, queries = realistic(n, 0, a.catalogue_vectors), realistic(200, 1, a.catalogue_vectors)
        structure = {'gaussian': 'drawn from a Gaussian with the mean and covariance of the ml-100k MiniLM item vectors',
                     'real+noise': 'ml-100k MiniLM item vectors plus noise from their Gaussian (half its spread)'}[a.catalogue_vectors]
        query_model = 'drawn the same way'
    out = {'items': n, 'dim': d, 'vectors': a.catalogue_vectors, 'structure': structure, 'query_model': query_model,
           'queries': len(queries), 'k': 10, 'generate_seconds': time.perf_counter() - t0, 'build_threads': BUILD_THREADS}
    if faiss_available():
        import faiss; faiss.omp_set_num_threads(torch.get_num_threads())
    res, truth = exact_indexes(items, queries)
    if faiss_available():
        for dtype in ('float32', 'float16'): res[f'ivf_{dtype}'] = ivf_index(items, queries, truth, dtype)
        res['hnsw_float32'] = hnsw_index(items, queries, min(n, a.hnsw_items))
        res['hnsw_int8'] = hnsw_int8_index(items, queries, truth)
    else: res['faiss'] = 'not installed: pip install "transferrec[faiss]"'
    out['indexes'] = res
    del items; gc.collect()
    return out

def exact_indexes(items: np.ndarray, queries: np.ndarray) -> tuple[dict, np.ndarray]:
    "Exact search in float32 and float16, and the true top 10 of every query."
    from transferrec.retrieval import VectorIndex, recall_at_k
    res = {}
    exact = VectorIndex(items, kind='exact')
    truth = exact.search(queries, 10)[1]
    res['exact_float32'] = {'build_seconds': exact.build_seconds, 'memory_mb': exact.memory_mb, **latency(exact, queries[:40]),
                            'recall@10': 1.0}
    del exact; gc.collect()
    half = VectorIndex(items, kind='exact', dtype='float16')
    res['exact_float16'] = {'build_seconds': half.build_seconds, 'memory_mb': half.memory_mb, **latency(half, queries[:40]),
                            'recall@10': recall_at_k(half.search(queries, 10)[1], truth)}
    del half; gc.collect()
    return res, truth

def ivf_index(items: np.ndarray, queries: np.ndarray, truth: np.ndarray, dtype: str) -> dict:
    "An IVF index of `dtype` vectors over an nprobe sweep, reported at the smallest nprobe meeting the recall target."
    from transferrec.retrieval import VectorIndex, recall_at_k
    with faiss_threads(BUILD_THREADS): ivf = VectorIndex(items, kind='ivf', dtype=dtype)
    sweep = {}
    for nprobe in (8, 16, 32, 48, 64, 96):
        ivf.set_params(nprobe=nprobe)
        sweep[nprobe] = {'recall@10': recall_at_k(ivf.search(queries, 10)[1], truth), **latency(ivf, queries)}
    best = first_reaching_target(sweep)
    out = {'nlist': ivf.nlist, 'build_seconds': ivf.build_seconds, 'memory_mb': ivf.memory_mb,
           'chosen_nprobe': best, **sweep[best], 'sweep': sweep}
    del ivf; gc.collect()
    return out

def hnsw_index(items: np.ndarray, queries: np.ndarray, m: int) -> dict:
    "An HNSW index of the first `m` items over an ef_search sweep (its build is slow on few cores)."
    from transferrec.retrieval import VectorIndex, recall_at_k
    with faiss_threads(BUILD_THREADS): h = VectorIndex(items[:m], kind='hnsw', ef_search=128)
    ht = VectorIndex(items[:m], kind='exact').search(queries, 10)[1]
    sweep = {}
    for ef in (64, 128, 256, 512):
        h.set_params(ef_search=ef)
        sweep[ef] = {'recall@10': recall_at_k(h.search(queries, 10)[1], ht), **latency(h, queries)}
    best = first_reaching_target(sweep)
    return {'items_indexed': m, 'M': 32, 'ef_construction': h.index.hnsw.efConstruction, 'build_seconds': h.build_seconds,
            'memory_mb': h.memory_mb, 'chosen_ef_search': best, **sweep[best], 'sweep': sweep,
            'note': None if m == len(items) else f'built on the first {m:,} items only (build time on this '
                                                  'machine); its build time grows about n log n'}

def hnsw_int8_index(items: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    "`benchmarks/scale.py`'s 1M graph: HNSW over 8-bit codes of the leading directions of all items, its 10 x k best re-scored from a float32 file on disk."
    from scale import GRAPH1M, graph_options
    from transferrec.retrieval import VectorIndex, recall_at_k
    options = dict(**graph_options(GRAPH1M), k_factor=10)
    with tempfile.TemporaryDirectory() as tmp:
        with faiss_threads(BUILD_THREADS): h = VectorIndex(items, kind='hnsw', rescore_file=f'{tmp}/rows.npy', **options)
        sweep = {}
        for ef in (128, 256, 512, 1024):
            h.set_params(ef_search=ef)
            sweep[ef] = {'recall@10': recall_at_k(h.search(queries, 10)[1], truth), **latency(h, queries)}
        best = first_reaching_target(sweep)
        out = {'dims': options['dims'], 'M': options['hnsw_m'], 'ef_construction': options['ef_construction'], 'k_factor': options['k_factor'],
               'build_seconds': h.build_seconds, 'memory_mb': h.memory_mb, 'disk_mb': h.disk_mb, 'chosen_ef_search': best,
               **sweep[best], 'sweep': sweep}
        del h; gc.collect()
    return out

# ---------------------------------------------------------------------------------------------------------------------
# run by `run_child` in a fresh process, so that its import time and peak memory are the pipeline's own
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
    "load_csv + clean + split of a synthetic 20,000,000-interaction CSV (2,000,000 with --quick), in a fresh process."
    n = 2_000_000 if a.quick else 20_000_000
    cache = Path(a.data_dir).expanduser(); cache.mkdir(parents=True, exist_ok=True)
    path = cache/f'interactions-{n}.csv'
    t0 = time.perf_counter()
    made = not path.exists()
    if made: synthetic_csv(path, n)
    out = {'rows': n, 'csv': str(path), 'csv_mb': path.stat().st_size / 1e6,
           'csv_write_seconds': time.perf_counter() - t0 if made else 'reused', 'protocol': a.data_protocol,
           'clean': 'min_user_interactions=5, min_item_interactions=5 (dedupe keeps the latest per pair)'}
    out.update(run_child(DATA_CHILD, path, a.data_protocol, timeout=1500))
    return out

# ---------------------------------------------------------------------------------------------------------------------
DISTRIBUTED_SEEDS = (0, 1, 2, 3, 4)     # "same quality" is judged on the interval over these seeds (two with --quick)

def bench_distributed(a) -> dict:
    "tests/test_distributed.py's two-tower run, each seed: one process vs torchrun with two gloo processes."
    from transformers import AutoTokenizer, BertConfig, BertModel
    from transferrec.core import free_port
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
        seeds, runs = DISTRIBUTED_SEEDS[:2] if a.quick else DISTRIBUTED_SEEDS, {}
        for seed in seeds:
            t0 = time.perf_counter()
            mod.run_command([sys.executable, tmp/'worker.py', tmp/'tiny', tmp/f'one{seed}.json', '32', str(seed)], tmp)
            t1 = time.perf_counter()
            mod.run_command([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--nnodes', '1', '--master_addr',
                             '127.0.0.1', '--master_port', str(free_port()), tmp/'worker.py', tmp/'tiny', tmp/f'two{seed}.json', '16',
                             str(seed)], tmp)
            t2 = time.perf_counter()
            one, two = (json.loads((tmp/f'{n}{seed}.json').read_text()) for n in ('one', 'two'))
            runs[seed] = {'single_process': {**one, 'wall_seconds': t1 - t0}, 'torchrun_2_gloo': {**two, 'wall_seconds': t2 - t1}}
        return {'model': 'tiny BERT (2 layers, 32 wide), two-tower, synthetic 120 users x 100 items, 40 steps, global batch 32',
                **runs[seeds[0]],                                       # the table: the first seed's pair of runs
                'seeds': {'seeds': list(seeds), **{k: [runs[sd][k]['test_ndcg@10'] for sd in seeds]
                                                   for k in ('single_process', 'torchrun_2_gloo')}}}
    finally: shutil.rmtree(tmp, ignore_errors=True)

BENCHES = {'encoding': bench_encoding, 'finetune': bench_finetune, 'serving': bench_serving, 'catalogue': bench_catalogue,
           'data': bench_data, 'distributed': bench_distributed, 'truncation': bench_truncation}
