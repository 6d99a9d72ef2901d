"Two-tower and cross-encoder strategies, trained for a few steps of a tiny BERT on synthetic data."
import numpy as np
import pytest
import torch

from transferrec.core import DataError
from transferrec.data import split, synthetic
from transferrec.baselines import Pop, Random
from transferrec.metrics import evaluate
from transferrec.twotower import TwoTowerRecommender, next_item_pairs, info_nce
from transferrec.crossencoder import CrossEncoderReranker

TINY = dict(history_items=5, user_max_length=32, item_max_length=16, batch_size=32, max_steps=40, eval_steps=20,
            lr=2e-3, temperature=0.1, warmup_steps=0, patience=None, eval_batch_size=256, num_threads=1,
            progress=False)
CE_TINY = dict(top_n=10, neg_ratio=2, history_items=5, max_length=48, batch_size=32, max_pairs=256, max_steps=8,
               eval_steps=4, eval_users=30, lr=1e-3, warmup_steps=0, patience=None, eval_batch_size=256,
               num_threads=1, progress=False)


@pytest.fixture(scope='module')
def syn():
    return split(synthetic(n_users=120, n_items=100, interactions_per_user=15, seed=3), 'loo')


@pytest.fixture(scope='module')
def two_tower(tiny_bert, syn):
    return TwoTowerRecommender(model=tiny_bert, **TINY).fit(syn)


def test_two_tower_scores(two_tower, syn):
    s = two_tower.score(np.arange(syn.n_users))
    assert s.shape == (syn.n_users, syn.n_items) and np.isfinite(s).all()
    assert two_tower.score(np.arange(3), on='valid').shape == (3, syn.n_items)
    assert not np.allclose(two_tower.score(np.arange(3), on='valid'), s[:3])   # test histories include the valid item
    h = two_tower.score_histories([np.array([1, 2, 3]), np.array([], dtype=np.int64)])
    assert h.shape == (2, syn.n_items) and np.isfinite(h).all()
    t = two_tower.score_text('Galaxy Rocket Orbit')
    assert t.shape == (syn.n_items,) and np.isfinite(t).all()
    assert np.abs(s).max() <= 1 + 1e-5                                        # cosine of normalised vectors


def test_two_tower_history_and_config(two_tower):
    import json
    json.dumps(two_tower.config)
    assert len(two_tower.history) == 2 and {'train_loss', 'valid_ndcg@10', 'step'} <= set(two_tower.history[0])
    assert all(np.isfinite(h['train_loss']) for h in two_tower.history)
    st = two_tower.train_stats_
    assert st['steps'] == TINY['max_steps'] and st['samples_per_second'] > 0


def test_two_tower_learns(two_tower, syn):
    "A real check: a randomly initialised tiny BERT, after 40 steps, ranks far better than chance."
    tt = evaluate(two_tower, syn)['ndcg@10']
    rnd = evaluate(Random().fit(syn), syn)['ndcg@10']
    assert tt > 2 * rnd, (tt, rnd)
    assert two_tower.train_stats_['best_valid_ndcg@10'] > two_tower.train_stats_['zero_shot_valid_ndcg@10']


def test_two_tower_reproducible(two_tower, tiny_bert, syn):
    again = TwoTowerRecommender(model=tiny_bert, **TINY).fit(syn)
    np.testing.assert_allclose(again.score(np.arange(20)), two_tower.score(np.arange(20)), atol=1e-5)
    assert [h['train_loss'] for h in again.history] == pytest.approx([h['train_loss'] for h in two_tower.history], rel=1e-5)


def test_two_tower_errors(syn):
    with pytest.raises(DataError, match='not fitted'): TwoTowerRecommender().score(np.arange(2))
    with pytest.raises(DataError, match='batch_size'): TwoTowerRecommender(batch_size=0)
    with pytest.raises(DataError, match='max_pairs'): next_item_pairs([np.arange(4)], max_pairs=0)


def test_info_nce_logq_shift_invariant():
    u, v = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1), torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    t, q = torch.tensor([0, 1, 2, 0, 1]), torch.log(torch.tensor([0.2, 0.3, 0.5]))
    assert torch.isclose(info_nce(u, v, t, q), info_nce(u, v, t, q - 7.0), atol=1e-5)
    assert not torch.isclose(info_nce(u, v, t, q), info_nce(u, v, t, None))


@pytest.fixture(scope='module')
def reranker(tiny_bert, syn):
    return CrossEncoderReranker(Pop(), model=tiny_bert, **CE_TINY).fit(syn)


def _orders(scores, seen):
    s = np.where(seen, -np.inf, scores)
    return np.argsort(-s, axis=1, kind='stable')


def test_cross_encoder_changes_only_top_n(reranker, syn):
    users = np.arange(syn.n_users)
    s, r = reranker.score(users), reranker.retriever.score(users)
    assert s.shape == (syn.n_users, syn.n_items) and np.isfinite(s).all()
    seen = syn.seen('test').toarray().astype(bool)
    so, ro = _orders(s, seen), _orders(r, seen)
    n = CE_TINY['top_n']
    changed = 0
    for u in users:
        unseen = syn.n_items - seen[u].sum()
        assert set(so[u, :n]) == set(ro[u, :n])
        np.testing.assert_array_equal(so[u, n:unseen], ro[u, n:unseen])
        changed += not np.array_equal(so[u, :n], ro[u, :n])
    assert changed > 0, "the cross-encoder re-ordered no user's top N"
    m = evaluate(reranker, syn)
    assert 0 <= m['ndcg@10'] <= 1
    assert len(reranker.history) == 2 and 'valid_ndcg@10' in reranker.history[0]


def test_cross_encoder_reproducible(reranker, tiny_bert, syn):
    again = CrossEncoderReranker(Pop(), model=tiny_bert, **CE_TINY).fit(syn)
    np.testing.assert_allclose(again.score(np.arange(10)), reranker.score(np.arange(10)), atol=1e-5)


def test_cross_encoder_over_two_tower(two_tower, tiny_bert, syn):
    ce = CrossEncoderReranker(two_tower, model=tiny_bert, fit_retriever=False, num_labels=2,
                              **{**CE_TINY, 'max_steps': 4, 'eval_steps': 4})
    ce.fit(syn)
    s = ce.score(np.arange(5), on='valid')
    assert s.shape == (5, syn.n_items) and np.isfinite(s).all()
    t = ce.score_text('Galaxy Rocket')
    base = two_tower.score_text('Galaxy Rocket')
    top = set(np.argsort(-base)[:CE_TINY['top_n']])
    assert set(np.argsort(-t)[:CE_TINY['top_n']]) == top
    h = ce.score_histories([np.array([1, 2, 3])])
    assert h.shape == (1, syn.n_items) and np.isfinite(h).all()
    assert not {1, 2, 3} & set(np.argsort(-h[0])[:CE_TINY['top_n']])   # history items are not candidates


def test_cross_encoder_errors(syn):
    with pytest.raises(DataError, match='not fitted'): CrossEncoderReranker('pop').score(np.arange(2))
    with pytest.raises(DataError, match='num_labels'): CrossEncoderReranker('pop', num_labels=3)
    with pytest.raises(DataError, match='negatives'): CrossEncoderReranker('pop', negatives='hard')
    with pytest.raises(DataError, match='unknown baseline'): CrossEncoderReranker('nope')


def test_keep_best_stops_restores_and_resumes():
    "KeepBest: the best weights come back, patience stops training, and its checkpoint state continues the count."
    from transformers import TrainerControl, TrainerState
    from transferrec.twotower import KeepBest
    layer, state, control = torch.nn.Linear(2, 1), TrainerState(), TrainerControl()
    keep = KeepBest(layer, patience=2)
    for step, value in [(1, 0.2), (2, 0.3), (3, 0.1)]:
        with torch.no_grad(): layer.bias.fill_(step)
        state.global_step = step
        keep.on_evaluate(None, state, control, metrics={'eval_ndcg@10': value})
    assert (keep.best, keep.best_step, keep.bad, control.should_training_stop) == (0.3, 2, 1, False)
    again = KeepBest(layer, patience=2)
    again.load_checkpoint_state(keep.checkpoint_state())
    state.global_step = 4
    again.on_evaluate(None, state, control, metrics={'eval_ndcg@10': 0.25})
    assert control.should_training_stop and again.bad == 2
    again.restore()
    assert float(layer.bias.detach()) == 2.0
