"""Measure the two-tower strategy's CPU configuration on ml-100k `loo` (seen items excluded).

Stage `valid`: train each candidate configuration once (seed 0) and record its validation ndcg@10 / recall@10.
Stage `test`: train the configuration chosen on validation with seeds 0, 1, 2, and EASE, and measure the test part once.
Every timing is recorded with the torch threads and the load average before and after it. Timed runs are meant to be
made under the shared lock: `flock /tmp/bench.lock nice -n 0 .venv/bin/python nbs/results/two_tower/measure.py test`.

    python nbs/results/two_tower/measure.py valid [names...]   # adds rows to two_tower.json's "search"
    python nbs/results/two_tower/measure.py test  [name [seeds]]   # the chosen row (default: best valid ndcg@10), seeds "0,1,2"
    python nbs/results/two_tower/measure.py test  "" ""            # no training: EASE and the summary of the runs recorded
"""
import json, os, sys, time
from pathlib import Path
import numpy as np, torch
from transferrec.core import machine_info
from transferrec.data import load_movielens, split
from transferrec.metrics import evaluate
from transferrec.baselines import EASE
from transferrec.twotower import TwoTowerRecommender, TWO_TOWER_TUTORIAL

RECORD = Path(__file__).with_name('two_tower.json')
THREADS = int(os.environ.get('TWO_TOWER_THREADS', 2))   # 1 for exploratory runs side by side
BASE = dict(TWO_TOWER_TUTORIAL)
CANDIDATES = {   # name: settings over the tutorial configuration
    'text + residual, 1 layer tuned': {},
    'text + residual, frozen encoder': {'trainable_layers': 0},
    'text only, 1 layer tuned': {'item_residual': False},
    'text only, frozen encoder': {'item_residual': False, 'trainable_layers': 0},
}

def load_avg(): return [float(x) for x in open('/proc/loadavg').read().split()[:3]]

def read_record(): return json.loads(RECORD.read_text()) if RECORD.exists() else {'search': {}, 'test': None}

def write_record(rec):
    tmp = RECORD.with_suffix('.tmp'); tmp.write_text(json.dumps(rec, indent=1)); tmp.replace(RECORD)

def fit_timed(make, data):
    "Fit a model, returning it with its fit seconds, torch threads and load averages before and after."
    before, t0 = load_avg(), time.perf_counter()
    model = make().fit(data)
    return model, {'fit_seconds': time.perf_counter() - t0, 'torch_threads': THREADS, 'load_before': before, 'load_after': load_avg()}

def scores(model, data, on):
    r = evaluate(model, data, k=10, on=on, metrics=['ndcg', 'recall'])
    return {'ndcg@10': r['ndcg@10'], 'recall@10': r['recall@10']}

def valid_stage(data, names):
    for name in names:
        settings = {**BASE, **CANDIDATES[name]}
        model, timing = fit_timed(lambda: TwoTowerRecommender(**settings, seed=0, num_threads=THREADS, progress=False), data)
        rec = read_record()   # other runs may have added rows meanwhile
        rec['search'][name] = {'settings': settings, 'valid': scores(model, data, 'valid'), **timing,
                               'zero_shot_valid_ndcg@10': model.train_stats_.get('zero_shot_valid_ndcg@10'),
                               'best_step': model.train_stats_['best_step'], 'steps': model.train_stats_['steps'],
                               'curve': model.history}
        write_record(rec); print(name, rec['search'][name]['valid'], round(timing['fit_seconds']), flush=True)

def test_stage(data, name=None, seeds=(0, 1, 2)):
    "Train the chosen configuration with each seed and measure valid and test; EASE once; runs accumulate in the record."
    rec = read_record()
    name = name or max(rec['search'], key=lambda n: rec['search'][n]['valid']['ndcg@10'])
    settings = rec['search'][name]['settings']
    test = rec['test'] if rec.get('test') and rec['test']['chosen'] == name else {'chosen': name, 'settings': settings, 'runs': []}
    for seed in seeds:
        model, timing = fit_timed(lambda: TwoTowerRecommender(**settings, seed=seed, num_threads=THREADS, progress=False), data)
        run = {'seed': seed, 'valid': scores(model, data, 'valid'), 'test': scores(model, data, 'test'), **timing,
               'best_step': model.train_stats_['best_step'], 'steps': model.train_stats_['steps']}
        print(seed, run['valid'], run['test'], round(timing['fit_seconds']), flush=True)
        rec = read_record()   # seeds run side by side add their rows meanwhile
        test = rec['test'] if rec.get('test') and rec['test']['chosen'] == name else test
        test['runs'] = [r for r in test['runs'] if r['seed'] != seed] + [run]
        rec['test'] = test; write_record(rec)
    if len(seeds) == 1: return   # one seed of several run side by side: `test NAME ""` summarises once they are all in
    if not seeds: rec = read_record(); test = rec['test']
    torch.set_num_threads(THREADS)
    ease, timing = fit_timed(lambda: EASE(), data)
    runs = sorted(test['runs'], key=lambda r: r['seed'])
    agg = lambda part, m: agg_plain([r[part][m] for r in runs])
    test.update(runs=runs, summary={f'{part} {m}': agg(part, m) for part in ('valid', 'test') for m in ('ndcg@10', 'recall@10')},
                fit_seconds=agg_plain([r['fit_seconds'] for r in runs]),
                ease={'valid': scores(ease, data, 'valid'), 'test': scores(ease, data, 'test'), **timing},
                protocol='ml-100k loo, full ranking, seen items excluded', machine=machine_info())
    rec['test'] = test; write_record(rec)

def agg_plain(xs): return {'mean': float(np.mean(xs)), 'sd': float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0,
                           'max': float(np.max(xs)), 'n': len(xs)}

if __name__ == '__main__':
    torch.set_num_threads(THREADS)
    data = split(load_movielens('ml-100k'), 'loo')
    stage, rest = sys.argv[1], sys.argv[2:]
    if stage == 'valid': valid_stage(data, rest or list(CANDIDATES))
    elif stage == 'test': test_stage(data, rest[0] if rest and rest[0] else None, tuple(int(x) for x in rest[1].split(',') if x) if len(rest) > 1 else (0, 1, 2))
    else: raise SystemExit(f"unknown stage {stage!r}: use 'valid' or 'test'")
