"""A small coordinate search around `sequential-text+id+repeats` on ml-100k `loo`, selected on the VALID part only.

    nice -n 10 timeout 6000 .venv/bin/python nbs/results/sequential_search/search.py            # the search (seed 0)
    nice -n 10 timeout 3000 .venv/bin/python nbs/results/sequential_search/search.py --test-read --seeds 0,1,2
    (or the two halves side by side: --test-read --only winner, --test-read --only shipped)

The search fits one candidate at a time from the shipped configuration, changing one factor (two in the last stage,
the best single changes combined), and records each candidate's valid ndcg@10 / recall@10, fit seconds, epochs and load
to search.json after every fit; a rerun skips candidates already recorded. `--test-read` runs once, after the search:
it picks the best candidate on valid, fits it and the shipped configuration over the given seeds, and records their test
metrics under `test_read_once_after_selection`. Nothing before that reads the test part."""
import argparse, json, os, platform, time
from pathlib import Path
import torch, torch.nn.functional as F
from transferrec.benchmark import protocol_metrics
from transferrec.core import atomic_write, set_seed
from transferrec.data import load_movielens, split
from transferrec.sequential import SequentialModel, SequentialRecommender

SHIPPED = dict(item_repr='text+id', learn_repeats=True)   # = MODELS['sequential-text+id+repeats']; the rest are the defaults
DEFAULTS = dict(dim=64, n_layers=2, n_heads=2, max_len=50, dropout=0.2, lr=1e-3, weight_decay=0.0, batch_size=128,
                patience=3, n_experts=4, label_smoothing=0.0, lr_decay=1.0)
KEEP = ('ndcg@10', 'recall@10', 'mrr@10')
# stage 1: one factor at a time, in the order most likely to matter (the search can stop early and still say something)
SINGLE = {'shipped': {},
          'dropout=0.1': dict(dropout=0.1), 'dropout=0.3': dict(dropout=0.3),
          'lr=2e-3': dict(lr=2e-3), 'patience=6': dict(patience=6),
          'max_len=100': dict(max_len=100), 'dim=128': dict(dim=128), 'n_layers=1': dict(n_layers=1),
          'n_heads=4': dict(n_heads=4), 'label_smoothing=0.1': dict(label_smoothing=0.1),
          'n_experts=1': dict(n_experts=1), 'n_experts=8': dict(n_experts=8),
          'lr_decay=0.9/epoch': dict(lr_decay=0.9), 'lr=5e-4': dict(lr=5e-4), 'weight_decay=0.05': dict(weight_decay=0.05)}

class SearchedSequential(SequentialRecommender):
    "The sequential recommender with three more knobs: adaptor experts, label smoothing, an exponential lr decay per epoch."
    def __init__(self, n_experts: int=4, label_smoothing: float=0.0, lr_decay: float=1.0, **kw):
        super().__init__(**kw)
        self.n_experts, self.label_smoothing, self.lr_decay = n_experts, label_smoothing, lr_decay

    def build_network(self, split):
        super().build_network(split)   # encodes the catalogue; rebuilt below with the searched number of experts
        c = self.config
        set_seed(c['seed'])
        self.net = SequentialModel(split.n_items, torch.as_tensor(self.text_vectors), c['item_repr'], c['dim'], c['n_layers'],
                                   c['n_heads'], c['max_len'], c['dropout'], n_experts=self.n_experts,
                                   learn_repeats=c.get('learn_repeats', False))

    def batch_loss(self, h, items, y, bias=None):
        logits = h @ items.T
        return F.cross_entropy(logits if bias is None else logits + bias, y, label_smoothing=self.label_smoothing)

    def _train_epoch(self, windows, catalogue, opt, gen, tower=None, stop=None, partial=None):
        for g in opt.param_groups:   # lr of epoch e (from 0) = initial lr * decay**e
            g.setdefault('initial_lr', g['lr']); g['lr'] = g['initial_lr'] * self.lr_decay ** len(self.history)
        return super()._train_epoch(windows, catalogue, opt, gen, tower, stop, partial)

def candidate(overrides: dict, seed: int) -> SearchedSequential:
    c = {**DEFAULTS, **overrides}
    return SearchedSequential(**SHIPPED, **c, seed=seed, progress=False, num_threads=1)

def fit_timed(overrides, spl, seed):
    model, load0 = candidate(overrides, seed), os.getloadavg()[0]
    t0 = time.perf_counter(); model.fit(spl); fit = time.perf_counter() - t0
    return model, dict(fit_seconds=round(fit, 1), load_average_before_after=[round(load0, 2), round(os.getloadavg()[0], 2)],
                       epochs=len(model.history), best_epoch=1 + max(range(len(model.history)), key=lambda i: model.history[i]['valid_ndcg@10']),
                       valid_curve=[round(h['valid_ndcg@10'], 4) for h in model.history])

def metrics(model, spl, on):
    return {seen: {m: round(v, 5) for m, v in protocol_metrics(model, spl, 10, on, seen).items() if m in KEEP} for seen in ('exclude', 'keep')}

def save(record, out):
    record['date'] = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    with atomic_write(out, 'w') as f: f.write(json.dumps(record, indent=1))

def valid_ndcg(run): return run['valid']['exclude']['ndcg@10']

def combined(runs: list) -> dict:
    "Stage 2: the two best single changes of different factors that beat the shipped model on valid, together."
    base = valid_ndcg(next(r for r in runs if r['name'] == 'shipped'))
    better = sorted((r for r in runs if r['stage'] == 1 and r['changes'] and valid_ndcg(r) > base), key=valid_ndcg, reverse=True)
    picked, factors = [], set()
    for r in better:
        if not set(r['changes']) & factors: picked.append(r); factors |= set(r['changes'])
    if len(picked) < 2: return {}
    a, b = picked[:2]
    out = {f"{a['name']} + {b['name']}": {**a['changes'], **b['changes']}}
    if len(picked) >= 3: out[f"{a['name']} + {b['name']} + {picked[2]['name']}"] = {**a['changes'], **b['changes'], **picked[2]['changes']}
    return out

def search(spl, record, out, deadline):
    for stage, todo in ((1, SINGLE), (2, None)):
        todo = combined(record['runs']) if todo is None else todo
        for name, changes in todo.items():
            if any(r['name'] == name for r in record['runs']): continue
            if time.time() > deadline: print(f"deadline reached before {name}", flush=True); return
            model, run = fit_timed(changes, spl, 0)
            run = dict(name=name, stage=stage, changes=changes, config={**DEFAULTS, **changes}, seed=0, **run, valid=metrics(model, spl, 'valid'))
            record['runs'].append(run); save(record, out)
            print(json.dumps({k: run[k] for k in ('name', 'fit_seconds', 'epochs', 'best_epoch', 'load_average_before_after')}),
                  run['valid']['exclude'], flush=True)

def test_read(spl, out: Path, seeds, only=None):
    "Read the test part once: the best candidate on valid and the shipped configuration over the given seeds (`only`: one of them)."
    record = json.loads(out.read_text())
    if record.get('test_read_once_after_selection', {}).get('complete'):
        raise SystemExit("the test part was already read once after selection; delete that key only to redo the whole read")
    winner = max(record['runs'], key=valid_ndcg)
    rows = [(winner['name'], winner['changes'])] + ([('shipped', {})] if winner['name'] != 'shipped' else [])
    for seed in seeds:
        for name, changes in rows:
            if only and name != (winner['name'] if only == 'winner' else 'shipped'): continue
            if any(r['name'] == name and r['seed'] == seed for r in json.loads(out.read_text()).get('test_read_once_after_selection', {}).get('runs', [])): continue
            model, run = fit_timed(changes, spl, seed)
            run = dict(name=name, seed=seed, **run, valid=metrics(model, spl, 'valid'), test=metrics(model, spl, 'test'))
            add_read(out, run, winner, len(rows) * len(seeds))
            print(json.dumps({k: run[k] for k in ('name', 'seed', 'fit_seconds', 'epochs')}), run['test']['exclude'], flush=True)

def add_read(out: Path, run: dict, winner: dict, expected: int):
    "Add one test-read run to the record under a lock (the winner and the shipped model may be read by two processes)."
    import fcntl
    with open(out.with_suffix('.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = json.loads(out.read_text())
        read = record.setdefault('test_read_once_after_selection', dict(
            note='read once, after the search was over; the winner was chosen on valid ndcg@10 (seen items excluded), seed 0',
            winner=winner['name'], winner_changes=winner['changes'], runs=[]))
        read['runs'].append(run)
        read.update(summary=summary(read['runs']), complete=len(read['runs']) >= expected)
        save(record, out)

def summary(runs):
    import numpy as np
    out = {}
    for name in dict.fromkeys(r['name'] for r in runs):
        rows = [r for r in runs if r['name'] == name]
        out[name] = {'seeds': [r['seed'] for r in rows]}
        for part in ('valid', 'test'):
            for seen in ('exclude', 'keep'):
                for m in ('ndcg@10', 'recall@10'):
                    v = np.array([r[part][seen][m] for r in rows])
                    out[name][f'{part} {seen} {m}'] = [round(float(v.mean()), 4), round(float(v.std(ddof=1)), 4) if len(v) > 1 else None]
    return out

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--test-read', action='store_true', help='after the search: read the test part once for the winner and the shipped model')
    p.add_argument('--only', choices=('winner', 'shipped'), help='with --test-read: read one of the two (run both side by side)')
    p.add_argument('--seeds', default='0,1,2'); p.add_argument('--minutes', type=float, default=80, help='start no search fit after this')
    p.add_argument('--out', default=str(Path(__file__).with_name('search.json')))
    a = p.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    spl = split(load_movielens('ml-100k'), 'loo')
    if a.test_read: raise SystemExit(test_read(spl, out, [int(s) for s in a.seeds.split(',') if s.strip()], a.only))
    record = json.loads(out.read_text()) if out.exists() else {}
    record.update(dataset='ml-100k', protocol='loo', k=10, selection='valid ndcg@10, seen items excluded, seed 0',
                  start=dict(model='sequential-text+id+repeats', **SHIPPED, **DEFAULTS), runs=record.get('runs', []),
                  torch_threads=1, machine=platform.processor() or platform.machine(), cpus=os.cpu_count())
    search(spl, record, out, time.time() + 60 * a.minutes)
