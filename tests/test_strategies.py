"Every strategy through one `Recommender`: fit, recommend by user / history / text, add items, save and load identically."
import json
import numpy as np
import pandas as pd
import pytest

from transferrec.core import DataError
from transferrec.data import split, synthetic
from transferrec.recommend import Recommender, STRATEGIES

TOWER = dict(history_items=5, user_max_length=32, item_max_length=16, batch_size=32, max_steps=20, eval_steps=10,
             lr=2e-3, temperature=0.1, warmup_steps=0, patience=None, eval_batch_size=256, num_threads=1, progress=False)
RERANK = dict(top_n=10, neg_ratio=2, history_items=5, max_length=48, batch_size=32, max_pairs=128, max_steps=4,
              eval_steps=2, eval_users=20, lr=1e-3, warmup_steps=0, patience=None, eval_batch_size=256, num_threads=1,
              progress=False)


@pytest.fixture(scope='module')
def data():
    return split(synthetic(n_users=80, n_items=60, interactions_per_user=12, seed=4), 'loo')


ITEMS_TOWER = dict(user_tower='items', trainable_layers=1, hard_negatives=8, item_residual=True, refresh_steps=5)

@pytest.fixture(scope='module', params=['two-tower', 'two-tower-items', 'cross-encoder'])
def fitted(request, tiny_bert, data):
    if request.param == 'two-tower': rec = Recommender('two-tower', model=tiny_bert, **TOWER)
    elif request.param == 'two-tower-items': rec = Recommender('two-tower', model=tiny_bert, **TOWER, **ITEMS_TOWER)
    else: rec = Recommender('cross-encoder', model=tiny_bert, retriever={'strategy': 'two-tower', 'model': tiny_bert, **TOWER}, **RERANK)
    return rec.fit(data)


def test_strategies_registered():
    assert set(STRATEGIES) == {'sequential', 'two-tower', 'cross-encoder', 'multitask'}
    with pytest.raises(DataError, match='unknown strategy'): Recommender('matrix-factorisation')
    with pytest.raises(DataError, match='bad option'): Recommender('two-tower', no_such_option=1)


def test_recommend_three_ways(fitted, data):
    ds = data.dataset
    by_user = fitted.recommend(user_id=ds.user_ids[0], k=5)
    assert len(by_user) == 5 and np.isfinite(by_user['score']).all()
    assert not set(by_user['item_id']) & set(ds.item_ids[fitted.histories[0]])
    by_hist = fitted.recommend(history=list(ds.item_ids[:3]), k=5)
    assert not set(by_hist['item_id']) & set(ds.item_ids[:3]) and 'because' in by_hist
    by_text = fitted.recommend(text='space adventures', k=5)
    assert len(by_text) == 5 and 'because' not in by_text


def test_score_matches_histories(fitted, data):
    users = np.arange(5)
    np.testing.assert_allclose(fitted.score(users, on='valid'),
                               fitted.model.score_histories([fitted.train_histories[u] for u in users]), atol=1e-6)


def test_save_load_identical_and_add_items(fitted, data, tmp_path):
    run = fitted.save(tmp_path/'run')
    back = Recommender.load(run)
    users = np.arange(data.n_users)
    np.testing.assert_allclose(back.score(users), fitted.score(users), atol=1e-4)
    u = data.dataset.user_ids[1]
    pd.testing.assert_frame_equal(back.recommend(user_id=u), fitted.recommend(user_id=u), atol=1e-4)
    meta = json.loads((run/'config.json').read_text())
    assert meta['data']['fingerprint'] and meta['settings']['seed'] == 0 and meta['strategy'] == fitted.strategy
    new = pd.DataFrame({'item_id': [90_001], 'title': ['Brand new space film'], 'genres': ['Sci-Fi']})
    back.add_items(new)
    assert len(back.items) == data.n_items + 1
    ranked = back.recommend(text='space', k=len(back.items), explain=False)
    assert 90_001 in set(ranked['item_id']) and np.isfinite(ranked['score']).all()
    with pytest.raises(DataError, match='already in the catalogue'): back.add_items(new)


def test_corrupt_strategy_file_detected(fitted, tmp_path):
    run = fitted.save(tmp_path/'run')
    victim = next(p for p in sorted(run.rglob('*.safetensors')))
    victim.write_bytes(victim.read_bytes()[:64])
    with pytest.raises(DataError, match='corrupt'): Recommender.load(run)


RESUME = {**TOWER, 'max_steps': 24, 'eval_steps': 4, 'batch_size': 16}

def test_two_tower_resumes_after_sigkill(tiny_bert, data, tmp_path, monkeypatch):
    "A Trainer run killed with SIGKILL resumes from its newest complete checkpoint and ends with the same weights."
    import os, signal, subprocess, sys, textwrap, time
    from transferrec.twotower import TwoTowerRecommender, TRAINER_STATE
    ckpt = tmp_path/'ckpt'
    script = textwrap.dedent(f"""
        import time
        from transferrec.data import split, synthetic
        from transferrec.twotower import TwoTowerRecommender, ValidatingTrainer
        slow = ValidatingTrainer.training_step
        def training_step(self, *a, **k):
            time.sleep(0.3); return slow(self, *a, **k)
        ValidatingTrainer.training_step = training_step
        data = split(synthetic(n_users=80, n_items=60, interactions_per_user=12, seed=4), 'loo')
        TwoTowerRecommender(model={tiny_bert!r}, **{RESUME!r}).fit(data, checkpoint={str(ckpt)!r})
    """)
    proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not list(ckpt.glob(f'checkpoint-8/{TRAINER_STATE}')) and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    steps = sorted(int(p.parent.name.split('-')[1]) for p in ckpt.glob(f'checkpoint-*/{TRAINER_STATE}'))
    assert steps and steps[-1] < 24, f"the run was not interrupted: {steps}"
    from transferrec.twotower import ValidatingTrainer
    calls, step = [], ValidatingTrainer.training_step
    monkeypatch.setattr(ValidatingTrainer, 'training_step', lambda self, *a, **k: calls.append(1) or step(self, *a, **k))
    resumed = TwoTowerRecommender(model=tiny_bert, **RESUME).fit(data, checkpoint=ckpt)
    assert len(calls) == 24 - steps[-1]                          # it really continued from the checkpoint
    straight = TwoTowerRecommender(model=tiny_bert, **RESUME).fit(data)
    assert [h['step'] for h in resumed.history] == [h['step'] for h in straight.history]
    np.testing.assert_allclose(resumed.item_vectors_, straight.item_vectors_, atol=1e-5)
    with pytest.raises(DataError, match='other settings or data'):
        TwoTowerRecommender(model=tiny_bert, **{**RESUME, 'lr': 1e-3}).fit(data, checkpoint=ckpt)
