"The measurement of the cross-encoder's effect (nbs/results/cross_encoder/measure.py): its shortcuts and statistics are exact."
import importlib.util
from pathlib import Path
import numpy as np
import pytest

from transferrec.baselines import EASE
from transferrec.crossencoder import CrossEncoderReranker
from transferrec.data import split, synthetic

SCRIPT = Path(__file__).resolve().parent.parent/'nbs'/'results'/'cross_encoder'/'measure.py'


@pytest.fixture(scope='module')
def measure():
    spec = importlib.util.spec_from_file_location('cross_encoder_measure', SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def candidates():
    "EASE's top 10 on a synthetic split, with a random 'cross-encoder' score per candidate."
    spl = split(synthetic(n_users=80, n_items=60, interactions_per_user=12, seed=4), 'loo')
    ease, users = EASE().fit(spl), np.arange(spl.n_users)
    base = np.asarray(ease.score(users, on='test'), dtype=np.float64)
    items, ok = CrossEncoderReranker(ease, fit_retriever=False, top_n=10).candidates(base, spl.seen('test').toarray().astype(bool))
    z = np.where(ok, np.random.default_rng(0).normal(size=items.shape), np.nan)
    cs = dict(items=items, retriever=np.where(ok, np.take_along_axis(base, items, 1), np.nan), cross_encoder=z)
    return spl, users, base, cs, ok


def test_blend_of_weight_one_is_the_retriever(measure, candidates):
    spl, users, base, cs, _ = candidates
    ease = measure.per_user_ndcg(base, spl, users, 'test')
    test_ease = measure.reranked_ndcg(None, spl, users, 'test', cs, base, measure.blend(cs, 1.0))
    np.testing.assert_allclose(test_ease, ease)
    shuffled = measure.reranked_ndcg(None, spl, users, 'test', cs, base, measure.blend(cs, 0.0))
    assert not np.allclose(shuffled, ease)   # a random order of the candidates does change the ranking


def test_users_without_a_candidate_positive_score_zero_either_way(measure, candidates):
    "The script re-scores only users whose item is a candidate: for the others both rankings give ndcg@10 = 0."
    spl, users, base, cs, ok = candidates
    pos = measure.positives_in(cs['items'], ok, spl, users, 'test')
    assert (pos < 0).any() and (pos >= 0).any()
    reranked = measure.reranked_ndcg(None, spl, users, 'test', cs, base, cs['cross_encoder'])
    ease = measure.per_user_ndcg(base, spl, users, 'test')
    assert np.all(reranked[pos < 0] == 0) and np.all(ease[pos < 0] == 0)


def test_pairwise_accuracy_by_hand(measure):
    cs = dict(items=np.array([[5, 6, 7, 8]]), retriever=np.array([[4., 3., 2., 1.]]),
              cross_encoder=np.array([[0., 2., 0., np.nan]]))   # the last candidate does not exist
    out = measure.what_it_learns(cs, np.array([1]))   # the positive is the second candidate
    assert out['pairwise_accuracy_retriever'] == pytest.approx(0.5)        # above item 7, below item 5
    assert out['pairwise_accuracy_cross_encoder'] == pytest.approx(1.0)    # above both others
    assert out['positive_rank_in_candidates_cross_encoder_mean'] == 1 and out['positive_rank_in_candidates_retriever_mean'] == 2
    assert out['pairs'] == 2
