"""Training through the HF Trainer runs under torchrun with two CPU processes (gloo) and matches a single process.

What "matches" can mean at this size. The two-process run cannot equal the one-process run: its in-batch negatives come
from a local batch of 16 instead of 32 and its data order differs, so it lands on another optimum, as another seed
would. Measured with this worker (seeds 0-4, tiny BERT, 120 users, 40 steps, 2-core CPU), test ndcg@10:

    seed          0       1       2       3       4      mean +- sd
    1 process   0.1905  0.1803  0.1716  0.2042  0.1533   0.1800 +- 0.0193
    2 processes 0.1920  0.1988  0.2206  0.1998  0.1770   0.1976 +- 0.0158
    difference  +0.8%   +10.3%  +28.5%  -2.2%   +15.4%   (valid ndcg@10: -1.6%, +16.5%, -1.2%, +16.3%, +16.0%)

So "within 5%" holds for seed 0 and not for seeds 1, 2 and 4: at this size one seed's difference is as large as the
seed-to-seed spread of a single process (sd 0.019 = 11%), and the paired changes' 95% interval over these five seeds,
-4.7% to +25.8%, does not resolve a 5% bound either. So the speed benchmark's report (benchmarks/report.py,
`within_over_seeds`) judges the README's "same quality: within 5%" on the interval over the seeds it recorded (one seed
in the record of 2026-11-29: "not resolved"; `bench_distributed` now runs five), never on one seed's difference, and
this test asserts what one run can show, each of which fails when distributed training is broken:
- the same number of optimizer steps with the same global batch (each pair seen once per epoch across both ranks);
- both ranks end with identical weights (DDP's all-reduce keeps them in sync; ranks training apart would differ);
- both runs learn (well above the untrained encoder);
- test and valid ndcg@10 differ by at most QUALITY_TOLERANCE = 0.06, the largest difference seen over the five seeds
  (0.049) plus a margin; about 3 single-process seed standard deviations.

Mutation check, tried by hand: the worker run under torchrun with a DDP communication hook that returns each rank's own
gradient (no all-reduce). The ranks' item vectors then differ by up to 0.38 and the sync assertion fails; test ndcg@10
was 0.1412 against 0.1905, a difference of 0.049 that the quality tolerance alone would have let through."""
import json, os, subprocess, sys, textwrap
import numpy as np
import pytest
from transferrec.core import free_port

QUALITY_TOLERANCE = 0.06

WORKER = textwrap.dedent('''
    import json, os, sys, time
    import numpy as np, torch
    from transferrec.data import split, synthetic
    from transferrec.metrics import evaluate
    from transferrec.twotower import TwoTowerRecommender
    model, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    torch.set_num_threads(1)
    data = split(synthetic(n_users=120, n_items=100, interactions_per_user=15, seed=3), 'loo')
    t0 = time.perf_counter()
    rec = TwoTowerRecommender(model=model, history_items=5, user_max_length=32, item_max_length=16, batch_size=batch,
                              max_steps=40, eval_steps=20, lr=2e-3, temperature=0.1, warmup_steps=0, patience=None,
                              eval_batch_size=256, num_threads=1, progress=False, seed=seed).fit(data)
    rank = int(os.environ.get('RANK', 0))
    np.save(f'{out}.rank{rank}.npy', rec.item_vectors_)        # every rank's final item vectors
    if rank == 0:
        json.dump({'world_size': int(os.environ.get('WORLD_SIZE', 1)), 'seconds': time.perf_counter() - t0,
                   'distributed': torch.distributed.is_available() and torch.distributed.is_initialized(),
                   'backend': torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
                   **rec.train_stats_, 'test_ndcg@10': evaluate(rec, data)['ndcg@10']}, open(out, 'w'))
''')

def run_command(cmd, tmp_path):
    "Run `cmd` offline with one thread per process in `tmp_path`; fail with its output unless it succeeds."
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
           'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"

def test_torchrun_two_processes_match_one(tiny_bert, tmp_path):
    "Global batch 32: one process x 32 vs two gloo processes x 16; both learn, to the same quality."
    script = tmp_path/'worker.py'
    script.write_text(WORKER)
    single, multi = tmp_path/'single.json', tmp_path/'multi.json'
    run_command([sys.executable, script, tiny_bert, single, '32'], tmp_path)
    run_command([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--nnodes', '1',
                 '--master_addr', '127.0.0.1', '--master_port', str(free_port()), script, tiny_bert, multi, '16'], tmp_path)
    one, two = json.loads(single.read_text()), json.loads(multi.read_text())
    assert not one['distributed'] and two['distributed'] and two['world_size'] == 2 and two['backend'] == 'gloo'
    assert one['steps'] == two['steps'] == 40                       # same global batch: same number of optimizer steps
    rank0, rank1 = (np.load(f'{multi}.rank{r}.npy') for r in (0, 1))
    np.testing.assert_allclose(rank0, rank1, atol=1e-6)             # the ranks trained one model, not two
    for r in (one, two):                                             # both learned: well above the untrained encoder
        assert r['best_valid_ndcg@10'] > r['zero_shot_valid_ndcg@10'] + 0.05, r
    # same quality within the seed-to-seed spread of this size (see the module docstring; 5% cannot be asserted here)
    assert abs(one['best_valid_ndcg@10'] - two['best_valid_ndcg@10']) <= QUALITY_TOLERANCE, (one, two)
    assert abs(one['test_ndcg@10'] - two['test_ndcg@10']) <= QUALITY_TOLERANCE, (one, two)
