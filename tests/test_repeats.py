"The learned repeat bias of the sequential model: what it learns, that it is off by default, kept on save, and reads only the given history."
import numpy as np, pytest, torch
from transferrec.data import split, synthetic
from transferrec.sequential import (SequentialRecommender, history_windows, window_priors, batch_before, repeat_mask,
                                    history_mask)

SMALL = dict(dim=16, max_len=10, progress=False)


@pytest.fixture(scope='module')
def tiny():
    return split(synthetic(n_users=60, n_items=40, interactions_per_user=12, seed=2), 'loo')


@pytest.fixture(scope='module')
def vectors(tiny):
    return np.random.default_rng(0).normal(size=(tiny.n_items, 24)).astype(np.float32)


@pytest.fixture(scope='module')
def fitted(tiny, vectors):
    return SequentialRecommender('text+id', learn_repeats=True, epochs=6, patience=None, text_vectors=vectors, **SMALL).fit(tiny)


def learned_bias(tiny, seqs, epochs=8):
    "The bias an ID model learns from `seqs` (items < 40) by the training step `fit` takes, written out from public parts."
    r = SequentialRecommender('id', learn_repeats=True, **SMALL); r.build_network(tiny)
    x, y, lengths = map(torch.from_numpy, history_windows(seqs, 10))
    before, offsets = map(torch.from_numpy, window_priors(seqs, 10))
    opt, gen = torch.optim.AdamW(r.param_groups()), torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            real = y[idx] != -100
            items = r.net.item_embeddings()
            h = r.net.encode(items[x[idx]], lengths[idx])[real]
            bias = r.net.repeat * repeat_mask(x[idx], lengths[idx], tiny.n_items, batch_before(before, offsets, idx))[real]
            loss = r.batch_loss(h, items, y[idx][real], bias)
            opt.zero_grad(); loss.backward(); opt.step()
    return r.net.repeat.item()


def test_masks_by_hand():
    seqs = [np.array([5, 6, 5, 7, 8, 9])]
    x, y, l = map(torch.from_numpy, history_windows(seqs, 2))          # windows [8, 9 <- 7, 8], [5, 7 <- 6, 5], [5]
    before, offsets = map(torch.from_numpy, window_priors(seqs, 2))
    assert x.tolist() == [[7, 8], [6, 5], [5, 0]] and before.tolist() == [5, 6, 5, 5] and offsets.tolist() == [0, 3, 4, 4]
    idx = torch.tensor([1, 0])                                              # a batch in another order
    m = repeat_mask(x[idx], l[idx], 10, batch_before(before, offsets, idx))
    assert m[0, 0].nonzero().flatten().tolist() == [5, 6]                  # window [6, 5] after 5
    assert m[1, 0].nonzero().flatten().tolist() == [5, 6, 7] and m[1, 1].nonzero().flatten().tolist() == [5, 6, 7, 8]
    assert not repeat_mask(x[2:], l[2:], 10)[0, 0, 0]                      # padding (item 0) never counts
    assert history_mask([np.array([2, 2, 4]), np.array([], np.int64)], 5).tolist() == [[0, 0, 1, 0, 1], [0] * 5]


def test_bias_learns_the_data(tiny, fitted):
    rng = np.random.default_rng(0)
    comes_back = [np.tile(rng.choice(40, 2, replace=False), 8) for _ in range(60)]     # a, b, a, b, ...
    assert learned_bias(tiny, tiny.histories('valid')) < -0.2      # synthetic users never repeat an item
    assert learned_bias(tiny, comes_back) > 0.2                     # these users repeat all the time
    assert fitted.net.repeat.item() < -0.01                         # and through fit (the best epoch's weights)


def test_off_by_default(tiny, vectors, fitted):
    plain = SequentialRecommender('text+id', epochs=2, text_vectors=vectors, **SMALL)
    off = SequentialRecommender('text+id', learn_repeats=False, epochs=2, text_vectors=vectors, **SMALL)
    assert 'learn_repeats' not in plain.config and plain.config == off.config
    plain.fit(tiny); off.fit(tiny)
    assert not hasattr(plain.net, 'repeat') and 'repeat' not in plain.net.state_dict() and len(plain.param_groups()) == 1
    h = tiny.histories('test')[:5]
    np.testing.assert_array_equal(plain.score_histories(h), off.score_histories(h))
    # the same weights with the bias at 0 score exactly as the plain model
    on = SequentialRecommender('text+id', learn_repeats=True, text_vectors=vectors, **SMALL); on.build_network(tiny)
    on.net.load_state_dict({**plain.net.state_dict(), 'repeat': torch.tensor(0.)}); on.net.eval()
    np.testing.assert_allclose(on.score_histories(h), plain.score_histories(h), atol=1e-6)


def test_save_and_load(tmp_path, tiny, fitted):
    fitted.save_state(tmp_path)
    back = SequentialRecommender(**fitted.config, progress=False)
    back.restore_state(tmp_path, tiny.dataset.items)
    assert back.net.repeat.item() == fitted.net.repeat.item()
    h = tiny.histories('test')[:4]
    np.testing.assert_allclose(back.score_histories(h), fitted.score_histories(h), atol=1e-6)


def test_reads_the_given_history_only(tiny, fitted):
    "The bias follows the history the model is given, not the split's seen items."
    h = tiny.histories('test')[0]
    b = fitted.net.repeat.item()
    for given in (h, h[:-1]):
        offset = fitted.score_histories([given])[0] - (fitted.user_vectors([given]) @ fitted.item_matrix().T)[0]
        np.testing.assert_allclose(offset, b * np.isin(np.arange(tiny.n_items), given), atol=1e-4)
    assert offset[h[-1]] == pytest.approx(0, abs=1e-4)          # left out of the history: not pushed down
    u = fitted.score(np.array([0]), on='test')[0]                 # `score` reads the user's history up to the test part
    np.testing.assert_allclose(u, fitted.score_histories([h])[0], atol=1e-6)


@pytest.mark.parametrize('loss', ['full', 'sampled'])
def test_loss_variants_of_the_study_learn_the_bias_too(tiny, vectors, loss):
    "The study's loss variants take the repeat bias as the plain model does: fit runs and the bias learns the data."
    from transferrec.study import LossSequential
    m = LossSequential(loss, n_negatives=10, item_repr='text+id', learn_repeats=True, epochs=6, patience=None,
                       text_vectors=vectors, **SMALL).fit(tiny)
    assert m.net.repeat.item() < -0.01                              # synthetic users never repeat an item


@pytest.mark.parametrize('bias', [6.0, -6.0])
def test_recommend_paths_add_the_bias(tiny, vectors, bias):
    "With the history kept, every path of `recommend` (plain, with reasons, from an index) ranks as `score_histories` does."
    from transferrec.recommend import Recommender
    rec = Recommender('sequential', item_repr='text+id', learn_repeats=True, epochs=2, patience=None, text_vectors=vectors,
                      **SMALL).fit(tiny)
    with torch.no_grad(): rec.model.net.repeat.fill_(bias)   # large enough to move history items across the top 5
    assert rec.model.repeat_bias == pytest.approx(bias)
    hist = np.asarray(rec.histories[0])
    full = rec.model.score_histories([hist])[0]
    expected = np.argsort(-full, kind='stable')[:5]
    assert np.isin(expected, hist).all() == (bias > 0) and (not np.isin(expected, hist).any()) == (bias < 0)
    ids = rec.items['item_id'].to_numpy()
    for explain in (False, True):
        got = rec.recommend(history=list(ids[hist]), k=5, exclude_seen=False, explain=explain)
        np.testing.assert_array_equal(got['item_id'].to_numpy(), ids[expected])
        np.testing.assert_allclose(got['score'].to_numpy(), full[expected], atol=1e-5)
    rec.build_index(kind='exact')
    got = rec.recommend(history=list(ids[hist]), k=5, exclude_seen=False, explain=False)
    np.testing.assert_array_equal(got['item_id'].to_numpy(), ids[expected])
