"""Every model of the benchmark runs under the `temporal` protocol (one global cut in time), scored with both
seen-items policies, in a tiny configuration: the protocol is not only recorded for the models the benchmark file lists."""
import numpy as np
import pytest
from transferrec.benchmark import MODELS, SEEN_POLICIES, get_model, protocol_metrics
from transferrec.data import from_dataframes, split, synthetic

TOWER = dict(history_items=5, user_max_length=32, item_max_length=16, batch_size=32, max_pairs=128, max_steps=2, eval_steps=2,
             eval_users=10, warmup_steps=0, patience=None, num_threads=1, trainable_layers=1)   # the tiny encoder has 2 layers
RERANK = dict(top_n=10, neg_ratio=2, history_items=5, max_length=48, batch_size=32, max_pairs=64, max_steps=2, eval_steps=2,
              eval_users=10, warmup_steps=0, patience=None, num_threads=1, trainable_layers=1)


def tiny(name: str, bert: str) -> dict:
    "Options that make each registered model quick on the synthetic catalogue."
    if name == 'two-tower': return dict(model=bert, **TOWER)
    if name == 'two-tower+rerank': return dict(model=bert, retriever={'strategy': 'two-tower', 'model': bert, **TOWER}, **RERANK)
    if name.startswith('sequential'): return dict(epochs=1, dim=8, max_len=5, **({'model': bert} if name == 'sequential-text-tuned' else {}))
    if name == 'multitask': return dict(epochs=1, eval_every=1, dim=8)
    if name == 'bpr': return dict(epochs=2)
    return {}


@pytest.fixture(scope='module')
def temporal():
    "The synthetic users rate one after another; their times are shuffled so that most are active on both sides of the cut."
    ds = synthetic(n_users=60, n_items=40, interactions_per_user=12, seed=5)
    inter = ds.interactions[['user_id', 'item_id', 'rating', 'timestamp']].copy()
    inter['timestamp'] = np.random.default_rng(0).permutation(inter['timestamp'].to_numpy())
    s = split(from_dataframes(inter, ds.items), 'temporal')
    assert len(s.test) > 20 and s.train['timestamp'].max() < s.test['timestamp'].min()
    return s


@pytest.mark.parametrize('name', list(MODELS))
def test_every_model_runs_under_temporal_with_both_policies(name, temporal, tiny_bert):
    model = get_model(name, seed=0, progress=False, **tiny(name, tiny_bert)).fit(temporal)
    rows = {seen: protocol_metrics(model, temporal, k=10, seen=seen) for seen in SEEN_POLICIES}
    for seen, row in rows.items():
        values = np.array([v for m, v in row.items() if '@' in m])
        assert np.isfinite(values).all() and ((0 <= values) & (values <= 1)).all(), (seen, row)
    if name == 'multitask': assert np.isfinite(rows['keep']['rmse'])
