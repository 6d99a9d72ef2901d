"""The cross-encoder's paired effect on its retriever on ml-100k `loo`, and the ablation that explains it.

    nice -n 10 timeout 3000 .venv/bin/python nbs/results/cross_encoder/measure.py --seed 0   # seeds 0 and 1 recorded, one process each
    .venv/bin/python nbs/results/cross_encoder/measure.py --merge                             # seeds -> cross_encoder.json

EASE (the best retriever that fits a CPU budget next to the re-ranker) ranks every item; the cross-encoder, trained on
EASE's hard negatives (`negatives='retriever'`), re-ranks EASE's top 50. Everything chosen (the best training step, the
weight of a score blend) is chosen on a sample of validation users; the test part is read once, at the end. Each seed
writes seed-<seed>.json after every phase; --merge writes cross_encoder.json (mean and sd over the seeds present).
Full ranking, seen items excluded, ndcg@10. Users whose held-out item is not among the retriever's 50 candidates have
ndcg@10 = 0 with and without re-ranking (the item ranks below 50 either way), so only the other users are re-scored."""
import argparse, json, os, platform, time
from pathlib import Path
import numpy as np, torch
from scipy.stats import spearmanr
from transferrec.baselines import EASE
from transferrec.core import atomic_write
from transferrec.crossencoder import CrossEncoderReranker, lift_candidates
from transferrec.data import load_movielens, split
from transferrec.metrics import rank_metrics
from transferrec.records import bootstrap_ci
from transferrec.twotower import history_text

HERE = Path(__file__).parent
CONFIG = dict(top_n=50, negatives='retriever', neg_ratio=3, history_items=5, max_length=64, batch_size=32,
              trainable_layers=3, lr=1e-4, warmup_steps=0.1, logging_steps=20, patience=None)   # the tutorial sizes, hard negatives
BLEND_WEIGHTS = [round(w, 1) for w in np.linspace(0, 1, 11)]   # weight of the retriever in a per-user standardised blend

def write(path: Path, rec: dict):
    with atomic_write(path, 'w') as f: f.write(json.dumps(rec, indent=1))

def load() -> list[float]: return [round(x, 2) for x in os.getloadavg()]

def per_user_ndcg(scores, spl, users, on):
    "ndcg@10 of each user (full ranking, seen items excluded)."
    return rank_metrics(scores, spl.matrix(on)[users], 10, exclude=spl.seen(on)[users], metrics=['ndcg'])['ndcg@10']

def positives_in(items, ok, spl, users, on) -> np.ndarray:
    "Column of each user's held-out item among their candidates, -1 when it is not a candidate."
    rel = np.take_along_axis(spl.matrix(on)[users].toarray() > 0, items, 1) & ok
    return np.where(rel.any(1), rel.argmax(1), -1)

def what_it_sees(ce, spl, users, base, on='test') -> dict:
    "How many of the query's history titles survive the tokenizer's max_length, next to the history's length."
    c, tok, hist = ce.config, ce.tokenizer, spl.histories(on)
    targets = spl.matrix(on)[users].tocsr()
    kept_titles, in_query = [], []
    for r, u in enumerate(users):
        h = np.asarray(hist[u])[::-1][:c['history_items']]
        names = [ce._titles[i] for i in h]
        query = history_text(ce._titles, hist[u], c['history_items'])
        item = ce._item_texts[targets[r].indices[0]]
        enc = tok(query, item, truncation='longest_first', max_length=c['max_length'])
        n_query = int(np.sum(np.array(enc['token_type_ids']) == 0)) - 2   # [CLS] query [SEP]
        ends = np.cumsum([len(tok(n, add_special_tokens=False)['input_ids']) for n in names])
        ends = ends + np.arange(len(names)) * len(tok('; ', add_special_tokens=False)['input_ids'])   # separators
        kept_titles.append(int((ends <= n_query).sum())); in_query.append(len(names))
    kept, lens = np.array(kept_titles), np.array([len(hist[u]) for u in users])
    return {'history_items': c['history_items'], 'max_length': c['max_length'], 'users': len(users),
            'titles_whole_in_query_mean': float(kept.mean()), 'titles_whole_in_query_median': float(np.median(kept)),
            'share_queries_with_all_titles_whole': float((kept == np.array(in_query)).mean()),
            'history_length_mean': float(lens.mean()), 'history_length_median': float(np.median(lens)),
            'share_of_history_seen_mean': float((kept / lens).mean())}

def standardised(x) -> np.ndarray:
    "Each row's finite entries standardised (mean 0, sd 1)."
    m, s = np.nanmean(x, 1, keepdims=True), np.nanstd(x, 1, keepdims=True)
    return (x - m) / np.where(s > 0, s, 1.0)

def blend(cs, w: float) -> np.ndarray: return (1 - w) * standardised(cs['cross_encoder']) + w * standardised(cs['retriever'])

def what_it_learns(cs, pos) -> dict:
    "Pairwise accuracy (positive above a hard negative) of both scores on the same pairs, and their rank correlation."
    acc_ce, acc_r, rho, rank_ce, rank_r = [], [], [], [], []
    for r in np.flatnonzero(pos >= 0):
        z, s, j = cs['cross_encoder'][r], cs['retriever'][r], pos[r]
        ok = np.isfinite(z); ok[j] = False
        acc_ce.append(float(np.mean((z[j] > z[ok]) + 0.5 * (z[j] == z[ok]))))
        acc_r.append(float(np.mean((s[j] > s[ok]) + 0.5 * (s[j] == s[ok]))))
        fin = np.isfinite(z)
        rho.append(float(spearmanr(z[fin], s[fin])[0]))
        rank_ce.append(int((z[ok] > z[j]).sum()) + 1); rank_r.append(int((s[ok] > s[j]).sum()) + 1)
    return {'users_with_positive_in_candidates': len(acc_ce), 'pairs': int(sum(np.isfinite(cs['cross_encoder'][pos >= 0]).sum(1) - 1)),
            'pairwise_accuracy_cross_encoder': float(np.mean(acc_ce)), 'pairwise_accuracy_retriever': float(np.mean(acc_r)),
            'spearman_cross_encoder_vs_retriever_mean': float(np.nanmean(rho)),
            'positive_rank_in_candidates_cross_encoder_mean': float(np.mean(rank_ce)),
            'positive_rank_in_candidates_retriever_mean': float(np.mean(rank_r)),
            'share_positive_top10_cross_encoder': float(np.mean(np.array(rank_ce) <= 10)),
            'share_positive_top10_retriever': float(np.mean(np.array(rank_r) <= 10))}

def reranked_ndcg(ce, spl, users, on, cs, base, order_scores) -> np.ndarray:
    "Per-user ndcg@10 of the list whose candidates are ordered by `order_scores` (users outside `cs` not included)."
    z = np.where(np.isfinite(cs['cross_encoder']), order_scores, np.nan)
    return per_user_ndcg(lift_candidates(base, cs['items'], z), spl, users, on)

def run_seed(seed: int, steps: int, eval_steps: int, valid_users: int, out: Path, test_users: int|None=None):
    rec = {'seed': seed, 'config': {**CONFIG, 'max_steps': steps, 'eval_steps': eval_steps, 'eval_users': valid_users,
           'max_pairs': steps * CONFIG['batch_size'] // (1 + CONFIG['neg_ratio'])}, 'torch_threads': torch.get_num_threads(),
           'machine': platform.processor() or platform.machine(), 'cpus': os.cpu_count(), 'load_average_start': load(),
           'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}
    spl = split(load_movielens('ml-100k'), 'loo')
    users = np.arange(spl.n_users if test_users is None else test_users)   # test_users: a smoke run on the first users
    t0 = time.perf_counter(); ease = EASE().fit(spl); rec['retriever'] = {'name': 'ease', 'lambda': ease.lambda_fitted_,
                                                                          'fit_seconds': round(time.perf_counter() - t0, 2)}
    base_test = np.asarray(ease.score(users, on='test'), dtype=np.float64)
    ndcg_ease = per_user_ndcg(base_test, spl, users, 'test')
    ce = CrossEncoderReranker(ease, fit_retriever=False, seed=seed, num_threads=1, progress=False, max_steps=steps,
                              eval_steps=eval_steps, eval_users=valid_users, max_pairs=rec['config']['max_pairs'],
                              **{k: v for k, v in CONFIG.items()})
    # (a) what it sees: the query's titles, and the ceiling of any re-ranker (share of held-out items among the candidates)
    ce.read_items(spl.dataset.items); ce.load_model(); ce.split = spl
    items_t, ok_t = ce.candidates(base_test, spl.seen('test')[users].toarray().astype(bool))
    pos_t = positives_in(items_t, ok_t, spl, users, 'test')
    every = np.arange(spl.n_users)
    base_valid = np.asarray(ease.score(every, on='valid'), dtype=np.float64)
    items_v, ok_v = ce.candidates(base_valid, spl.seen('valid').toarray().astype(bool))
    pos_v = positives_in(items_v, ok_v, spl, every, 'valid')
    rec['sees'] = {**what_it_sees(ce, spl, users, base_test), 'test_share_positive_in_top50': float((pos_t >= 0).mean()),
                   'valid_share_positive_in_top50': float((pos_v >= 0).mean()),
                   'test_ndcg@10_of_a_perfect_reranker': float((pos_t >= 0).mean())}
    write(out, rec)
    # training: hard negatives, learning curve on the valid sample, best step kept (selected on valid)
    t0 = time.perf_counter(); ce.fit(spl); rec['fit_seconds'] = round(time.perf_counter() - t0, 1)
    rec['train_stats'] = ce.train_stats_; rec['curve'] = ce.history
    rec['retriever_valid_ndcg@10'] = float(ce.retriever_valid_ndcg_); rec['load_average_after_fit'] = load()
    write(out, rec)
    # (b) what it learns: on the validation sample's users whose valid item is a candidate; the blend weight is chosen here
    vu = ce._valid_users
    pv = positives_in(items_v[vu], ok_v[vu], spl, vu, 'valid')
    hit_v = vu[pv >= 0]
    t0 = time.perf_counter(); cs_v = ce.candidate_scores(hit_v, on='valid')
    rec['learns'] = {**what_it_learns(cs_v, pv[pv >= 0]), 'seconds': round(time.perf_counter() - t0, 1), 'valid_users': len(vu)}
    nv = {w: float(reranked_ndcg(ce, spl, hit_v, 'valid', cs_v, base_valid[hit_v], blend(cs_v, w)).sum() / len(vu))
          for w in BLEND_WEIGHTS}
    best_w = max(nv, key=lambda w: (nv[w], w))   # ties go to the retriever's side
    rec['blend'] = {'valid_ndcg@10_by_retriever_weight': nv, 'chosen_weight': best_w}
    write(out, rec)
    # test, read once: only the users whose test item is a candidate are re-scored (the others score 0 either way)
    hit_t = users[pos_t >= 0]
    t0 = time.perf_counter(); cs_t = ce.candidate_scores(hit_t, on='test'); test_s = time.perf_counter() - t0
    assert np.all(ndcg_ease[pos_t < 0] == 0), "a user whose item is not a candidate has ndcg@10 > 0: check top_n >= 10"
    test = {'users': int(len(users)), 'users_rescored': int(len(hit_t)), 'seconds': round(test_s, 1),
            'pairs_per_second': round(np.isfinite(cs_t['cross_encoder']).sum() / test_s, 1)}
    for name, order in (('reranked', cs_t['cross_encoder']), ('blend', blend(cs_t, best_w))):
        after = ndcg_ease.copy(); after[hit_t] = reranked_ndcg(ce, spl, hit_t, 'test', cs_t, base_test[hit_t], order)
        diff = after - ndcg_ease
        mean, lo, hi = bootstrap_ci(diff, n_boot=2000, seed=0)
        test[name] = {'ndcg@10': float(after.mean()), 'paired_difference': mean, 'ci95': [lo, hi],
                      'users_better': int((diff > 0).sum()), 'users_worse': int((diff < 0).sum())}
    test['retriever_ndcg@10'] = float(ndcg_ease.mean())
    test['learns_test'] = what_it_learns(cs_t, pos_t[pos_t >= 0])
    rec['test'] = test; rec['load_average_end'] = load(); rec['date_end'] = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    write(out, rec)
    print(json.dumps({k: rec[k] for k in ('fit_seconds', 'learns', 'blend', 'test')}, indent=1), flush=True)

def trend(curves: list[list[dict]], reference: float) -> dict:
    "Least-squares line of valid ndcg@10 against log2(steps) over every seed's curve, and where it would meet `reference`."
    pts = np.array([(h['step'], h['valid_ndcg@10']) for c in curves for h in c], dtype=float)
    slope, icpt = np.polyfit(np.log2(pts[:, 0]), pts[:, 1], 1)
    meet = float(2 ** ((reference - icpt) / slope)) if slope > 0 else None
    return {'slope_per_doubling': float(slope), 'intercept': float(icpt), 'steps_to_reach_retriever': meet,
            'points': len(pts)}

def merge(out: Path):
    runs = [json.loads(p.read_text()) for p in sorted(HERE.glob('seed-*.json'))]
    done = [r for r in runs if 'test' in r]
    if not done: raise SystemExit('no finished seed-*.json: run --seed first')
    ms = lambda xs: {'mean': float(np.mean(xs)), 'sd': float(np.std(xs, ddof=1)) if len(xs) > 1 else None, 'values': list(map(float, xs))}
    ref = float(np.mean([r['retriever_valid_ndcg@10'] for r in done]))
    rec = {'dataset': 'ml-100k', 'protocol': 'loo', 'seen': 'exclude', 'metric': 'ndcg@10', 'retriever': 'ease',
           'seeds': [r['seed'] for r in done], 'config': done[0]['config'], 'description': __doc__.splitlines()[0],
           'sees': done[0]['sees'], 'runs': done,
           'summary': {'retriever_test_ndcg@10': done[0]['test']['retriever_ndcg@10'],
                       'reranked_test_ndcg@10': ms([r['test']['reranked']['ndcg@10'] for r in done]),
                       'reranked_paired_difference': ms([r['test']['reranked']['paired_difference'] for r in done]),
                       'blend_test_ndcg@10': ms([r['test']['blend']['ndcg@10'] for r in done]),
                       'blend_paired_difference': ms([r['test']['blend']['paired_difference'] for r in done]),
                       'pairwise_accuracy_cross_encoder': ms([r['learns']['pairwise_accuracy_cross_encoder'] for r in done]),
                       'pairwise_accuracy_retriever': ms([r['learns']['pairwise_accuracy_retriever'] for r in done]),
                       'spearman': ms([r['learns']['spearman_cross_encoder_vs_retriever_mean'] for r in done]),
                       'fit_seconds': ms([r['fit_seconds'] for r in done]),
                       'retriever_valid_ndcg@10': ref,
                       'trend': trend([r['curve'] for r in done], ref)},
           'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}
    write(out, rec)
    print(json.dumps(rec['summary'], indent=1))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seed', type=int); p.add_argument('--steps', type=int, default=240)
    p.add_argument('--eval-steps', type=int, default=60); p.add_argument('--valid-users', type=int, default=100)
    p.add_argument('--merge', action='store_true'); p.add_argument('--test-users', type=int)
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.merge: merge(HERE/'cross_encoder.json')
    else: run_seed(a.seed, a.steps, a.eval_steps, a.valid_users,
                  HERE/(f'seed-{a.seed}.json' if a.test_users is None else f'smoke-{a.seed}.json'), a.test_users)
