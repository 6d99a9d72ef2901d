"""The repeat bias on ml-100k `loo`: `sequential-text+id` with and without `learn_repeats`, under both seen-items policies.

    nice -n 10 .venv/bin/python nbs/results/repeats/measure.py --seeds 0,1,2

Writes nbs/results/repeats/repeats.json after every model (a partial record survives an interrupted run)."""
import argparse, json, os, platform, time
from functools import partial
from pathlib import Path
import torch
from transferrec.benchmark import construct, protocol_metrics
from transferrec.core import atomic_write
from transferrec.data import load_movielens, split
from transferrec.recommend import Recommender

VARIANTS = {'sequential-text+id': partial(Recommender, 'sequential', item_repr='text+id'),   # = MODELS['sequential-text+id']
            'sequential-text+id+repeats': partial(Recommender, 'sequential', item_repr='text+id', learn_repeats=True)}
KEEP = ('ndcg@10', 'recall@10', 'mrr@10')

def main(seeds, out: Path):
    record = json.loads(out.read_text()) if out.exists() else {}
    record.update(dataset='ml-100k', protocol='loo', k=10, policies={'keep': 'nothing removed from the ranking (RecBole)',
                  'exclude': "the user's train and valid items removed"}, runs=record.get('runs', []),
                  target={'from': 'GRU4Rec, an independent RecBole run on ml-100k loo (issue 17)', 'ndcg@10': 0.0650,
                          'recall@10': 0.1304, 'factor': 1.10, 'policy': 'keep'},
                  torch_threads=torch.get_num_threads(), machine=platform.processor() or platform.machine(), cpus=os.cpu_count())
    with atomic_write(out, 'w') as f: f.write(json.dumps(record, indent=1))   # the description, before any run
    spl = split(load_movielens('ml-100k'), 'loo')
    for seed in seeds:
        for name, factory in VARIANTS.items():
            if any(r['model'] == name and r['seed'] == seed for r in record['runs']): continue
            model, load0 = construct(factory, seed=seed, progress=False), os.getloadavg()[0]
            t0 = time.perf_counter(); model.fit(spl); fit = time.perf_counter() - t0
            run = dict(model=name, seed=seed, fit_seconds=round(fit, 1), load_average_before_after=[round(load0, 2), round(os.getloadavg()[0], 2)],
                       epochs=len(model.model.history))
            for seen in ('keep', 'exclude'):
                run[seen] = {m: round(v, 5) for m, v in protocol_metrics(model, spl, 10, 'test', seen).items() if m in KEEP}
            net = model.model.net
            if hasattr(net, 'repeat'): run['repeat_bias'] = round(net.repeat.item(), 3)
            record['runs'].append(run); record['date'] = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
            with atomic_write(out, 'w') as f: f.write(json.dumps(record, indent=1))
            print(json.dumps(run), flush=True)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seeds', default='0'); p.add_argument('--out', default=str(Path(__file__).with_name('repeats.json')))
    a = p.parse_args()
    main([int(s) for s in a.seeds.split(',') if s.strip()], Path(a.out))
