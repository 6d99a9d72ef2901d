"""The cold-start fusion end to end: `ContentFusion` with the ridge prior and with the encoder fine-tuned to predict
popularity (`sequential-text+content+tuned-prior`), fitted, scored among the new items, and its bad input."""
import numpy as np
import pytest
import torch
from transferrec.benchmark import get_model
from transferrec.core import DataError
from transferrec.data import split, synthetic
from transferrec.metrics import evaluate
from transferrec.sequential import ContentFusion, tuned_popularity_prior
from transferrec.encoders import load_encoder

SMALL = dict(epochs=2, dim=8, max_len=5, progress=False, seed=0)


@pytest.fixture(scope='module')
def cold():
    return split(synthetic(n_users=80, n_items=60, interactions_per_user=12, seed=3), 'cold')


@pytest.fixture(scope='module')
def fitted(cold, tiny_bert):
    return {name: get_model(name, model=tiny_bert, **SMALL).fit(cold)
            for name in ('sequential-text+content', 'sequential-text+content+tuned-prior')}


def test_tuned_prior_leaves_the_models_encoder_as_it_was(fitted, tiny_bert):
    tuned = fitted['sequential-text+content+tuned-prior']
    assert tuned.prior_model == 'tuned'
    used, fresh = tuned.model.encoder().model.state_dict(), load_encoder(tiny_bert).model.state_dict()
    assert used.keys() == fresh.keys() and all(torch.equal(used[k], fresh[k]) for k in used)   # the prior tuned a copy


def test_the_two_priors_differ_and_both_rank_the_new_items(fitted, cold):
    ridge, tuned = fitted['sequential-text+content'], fitted['sequential-text+content+tuned-prior']
    assert np.isfinite(tuned.prior_).all() and not np.allclose(ridge.prior_, tuned.prior_)
    users = np.arange(cold.n_users)
    np.testing.assert_allclose(ridge.model.score(users), tuned.model.score(users), rtol=1e-5, atol=1e-5)   # same seed, same model
    for model in (ridge, tuned):
        r = evaluate(model, cold, 10, 'test', metrics=['recall'], candidates=cold.cold_items)
        assert 0 <= r['recall@10'] <= 1 and r['n_users'] > 0


def test_bad_input_is_named(cold, tiny_bert):
    with pytest.raises(DataError, match="prior_model must be one of"): ContentFusion(prior_model='lasso')
    items, counts = cold.dataset.items, np.bincount(cold.train['item_idx'], minlength=cold.n_items)
    with pytest.raises(DataError, match='encoder must be an Encoder'): tuned_popularity_prior(items, counts, tiny_bert)
    with pytest.raises(DataError, match='one count per item'): tuned_popularity_prior(items, counts[:3], load_encoder(tiny_bert))
    with pytest.raises(DataError, match='at least 2'): tuned_popularity_prior(items, np.zeros_like(counts), load_encoder(tiny_bert))
    with pytest.raises(DataError, match='between 1 and 2'): tuned_popularity_prior(items, counts, load_encoder(tiny_bert), layers=5)
