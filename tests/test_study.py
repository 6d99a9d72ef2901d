"The records (recording, intervals) and the transfer-study helpers: subsampling, domains, warm starts, bias metrics, losses, attributions."
import json, os, subprocess, sys
import numpy as np, pandas as pd, pytest, torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
from transferrec.core import DataError
from transferrec.data import synthetic, split
from transferrec.encoders import default_encoder_path
from transferrec.baselines import Pop, Random
from transferrec.sequential import SequentialRecommender
from transferrec import records, study

TINY = dict(epochs=1, dim=16, max_len=8, progress=False)

@pytest.fixture(scope='module')
def ds():
    return synthetic(n_users=60, n_items=50, interactions_per_user=10, seed=0)

@pytest.fixture(scope='module')
def loo(ds):
    return split(ds, 'loo')

def test_record_roundtrip_is_atomic(tmp_path):
    df = pd.DataFrame({'model': ['a', 'b'], 'ndcg@10': [0.1, 0.25]})
    records.run_recorded('exp', lambda c: {'results': df, 'other': df.head(1)}, {'seeds': [0, 1], 'epochs': 2}, tmp_path)
    raw = json.loads((tmp_path/'exp.json').read_text())
    assert raw['seeds'] == [0, 1] and raw['config']['epochs'] == 2 and raw['wall_seconds'] >= 0
    assert {'platform', 'cpu_count', 'torch'} <= set(raw['machine'])
    back = records.load_record('exp', tmp_path)
    pd.testing.assert_frame_equal(back['tables']['results'], df)
    assert [p.name for p in tmp_path.iterdir()] == ['exp.json']
    assert records.load_record('nope', tmp_path) is None and 'not recorded' in records.describe(None)
    with pytest.raises(DataError, match='DataFrame'): records.save_record('x', 3, {}, 0, tmp_path)

def test_intervals():
    m, lo, hi = records.seed_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and lo < 1.0 and hi > 3.0 and np.isclose(hi - m, 4.302653 * 1 / np.sqrt(3))
    assert np.isnan(records.seed_ci([0.5])[1]) and np.isnan(records.seed_ci([])[0])
    m, lo, hi = records.bootstrap_ci(np.r_[np.zeros(200), np.ones(200), np.nan])
    assert m == 0.5 and 0.4 < lo < 0.5 < hi < 0.6
    s = records.summarize(pd.DataFrame({'g': ['x', 'x', 'y'], 'seed': [0, 1, 0], 'recall@10': [0.1, 0.3, 0.2],
                                      'ndcg@10': [0.1, 0.1, 0.2]}), ['g'])
    assert list(s['n_seeds']) == [2, 1] and np.isclose(s['recall@10'].iloc[0], 0.2) and np.isnan(s['ndcg@10_lo'].iloc[1])

def test_truncate_users_keeps_latest_items(loo):
    t, cold = study.truncate_users(loo, 0.2, 4, seed=5)
    n = np.bincount(t.train['user_idx'], minlength=t.n_users)
    assert len(cold) == 12 and ((n[cold] >= 1) & (n[cold] <= 4)).all()
    for u in cold:
        full = loo.sequences('train')[u]
        np.testing.assert_array_equal(t.sequences('train')[u], full[len(full) - n[u]:])
    assert len(t.valid) == len(loo.valid) and len(t.test) == len(loo.test)
    with pytest.raises(DataError, match='fraction'): study.truncate_users(loo, 1.0)

def test_subsample_train(loo):
    s = study.subsample_train(loo, 0.25, seed=1)
    kept = set(s.train['user_idx'])
    assert len(kept) == 15 and set(s.valid['user_idx']) <= kept and len(s.test) == len(loo.test)
    pd.testing.assert_frame_equal(study.subsample_train(loo, 0.25, seed=1).train, s.train)
    assert len(study.subsample_train(loo, 0.1, by='interaction').train) == round(0.1 * len(loo.train))
    assert study.subsample_train(loo, 1).train is loo.train
    for bad in (0, 1.5, 'half'):
        with pytest.raises(DataError, match='fraction must be'): study.subsample_train(loo, bad)
    with pytest.raises(DataError, match="by must be"): study.subsample_train(loo, 0.5, by='item')
    assert [study.scaled_epochs(8, f, cap=30) for f in (1, 0.25, 0.01)] == [8, 16, 30]

def test_domains_do_not_leak(ds):
    src, tgt = study.genre_domains(ds, ('Space',))
    assert len(src) + len(tgt) == ds.n_items and len(tgt) > 0
    sp = study.domain_split(ds, tgt)
    assert all(getattr(sp, p)['item_idx'].isin(tgt).all() for p in ('train', 'valid', 'test'))
    np.testing.assert_array_equal(sp.cold_items, tgt)
    train = set(zip(sp.train['user_idx'], sp.train['item_idx']))
    assert not train & set(zip(sp.test['user_idx'], sp.test['item_idx']))
    with pytest.raises(DataError, match='unknown genre'): study.genre_domains(ds, ('Drama',))

def test_warm_start_starts_from_the_source_weights(ds, loo):
    base = study.make_model('id', ds, **TINY).fit(loo)
    w = study.WarmStart(base, epochs=1)
    assert w.config['item_repr'] == 'id' and w.config['epochs'] == 1
    w.build_network(loo)
    for k, v in base.net.state_dict().items(): torch.testing.assert_close(w.net.state_dict()[k], v)
    w.fit(loo)
    assert not torch.equal(w.net.ids.weight, base.net.ids.weight)     # training changed the copy, not the source

def test_with_histories_matches_the_model(ds, loo):
    m = study.make_model('id', ds, **TINY).fit(loo)
    np.testing.assert_allclose(study.WithHistories(m, loo).score(np.arange(5)), m.score(np.arange(5)), atol=1e-6)
    p = Pop().fit(loo)
    np.testing.assert_array_equal(study.WithHistories(p, loo).score([0, 1]), p.score([0, 1]))
    with pytest.raises(DataError, match='unknown study model'): study.make_model('gru', ds)

def test_popularity_bias_orders_pop_and_random(loo):
    pop, rnd = study.popularity_bias(Pop().fit(loo), loo), study.popularity_bias(Random().fit(loo), loo)
    assert pop['coverage@10'] < rnd['coverage@10'] and pop['avg_popularity@10'] > rnd['avg_popularity@10']
    assert pop['novelty@10'] < rnd['novelty@10'] and pop['head_share@10'] > rnd['head_share@10']
    prof = study.popularity_profile(loo)
    assert prof['share_top1%'] <= prof['share_top10%'] <= prof['share_top20%'] <= 1 and 0 < prof['gini'] < 1

def test_loss_variants(loo):
    a = study.LossSequential(item_repr='id', **TINY).fit(loo)
    b = SequentialRecommender('id', **TINY).fit(loo)
    np.testing.assert_allclose(a.score(np.arange(4)), b.score(np.arange(4)), atol=1e-4)   # full softmax = the base model
    for kw in (dict(loss='sampled', n_negatives=5, sampler='popularity', logq=True), dict(class_weight=0.5)):
        m = study.LossSequential(item_repr='id', **TINY, **kw).fit(loo)
        assert np.isfinite(m.score(np.arange(4))).all()
    with pytest.raises(DataError, match='n_negatives'): study.LossSequential(loss='sampled', n_negatives=0)
    with pytest.raises(DataError, match='sampler'): study.LossSequential(sampler='hard')

@pytest.fixture(scope='module')
def tiny_clf():
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(0)
    clf = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                                   num_labels=2))
    return clf, tok

def assert_complete(a: pd.DataFrame, rel: float=1e-3):
    """Integrated gradients' completeness: the attributions add up to score - baseline score, within `rel` of that
    difference (measured: 4e-5 of it with 32 steps, 3e-6 with 128), and the difference is one the check can see.
    All-zero attributions miss by the whole difference."""
    delta = a.attrs['score'] - a.attrs['baseline_score']
    assert abs(delta) > 1e-3, delta
    assert abs(a['attribution'].sum() - delta) <= rel * abs(delta), (a['attribution'].sum(), delta)

def test_integrated_gradients_are_complete(tiny_clf):
    clf, tok = tiny_clf
    a = study.token_attributions(clf, tok, 'Alien (1979).', 'Aliens (1986). Genres: Sci-Fi.', steps=32)
    assert_complete(a)
    assert a['token'].iloc[0] == '[CLS]' and set(a['segment']) == {'special', 'query', 'item'}
    g = study.token_attributions(clf, tok, 'Alien (1979).', 'Aliens (1986).', method='grad_x_input')
    assert np.isfinite(g['attribution']).all() and clf.training   # the model's mode is restored
    with pytest.raises(DataError, match='method'): study.token_attributions(clf, tok, 'a', 'b', method='lime')
    for broken in (a.assign(attribution=0.0), a.assign(attribution=a['attribution'] / 2)):   # zeroed, or half of each
        broken.attrs.update(a.attrs)
        with pytest.raises(AssertionError): assert_complete(broken)

def test_highlight_html():
    h = study.highlight_html(['[CLS]', 'star', '##s', '[SEP]', '<i>', '[SEP]'], [0.0, 1.0, -1.0, 0.0, 0.5, 0.0])
    assert '[CLS]' not in h and '&lt;i&gt;' in h and '<i>' not in h
    assert 'rgba(220,38,38,1.00)' in h and 'rgba(37,99,235,1.00)' in h and '>s<' in h   # "##s" joins its word
    assert study.highlight_html([], []).startswith('<div')

def test_crossover_and_pick_table():
    s = pd.DataFrame({'fraction': [0.1, 0.1, 1.0, 1.0], 'model': ['id', 'text'] * 2, 'ndcg@10': [0.01, 0.04, 0.05, 0.04]})
    assert study.crossover(s).startswith('id catches up with text at 100%')
    few = pd.DataFrame({'fraction': [0.1] * 4, 'n_train': [100] * 4, 'model': ['id', 'id', 'text', 'text'], 'seed': [0, 1] * 2,
                        'ndcg@10': [0.01, 0.02, 0.05, 0.06], 'recall@10': [0.0] * 4})
    p = study.pick_table(few=few)
    assert p.loc[0, 'pick'] == 'text' and p.loc[0, 'train_interactions'] == 100 and p.loc[0, 'runner_up'].startswith('id')

class ReasonsReplaced:
    "A fitted Recommender whose reasons (`because`) are replaced: by as many random history items, or by none."
    def __init__(self, rec, how: str, seed: int=1): self.rec, self.how, self.rng = rec, how, np.random.default_rng(seed)
    def __getattr__(self, name): return getattr(self.rec, name)
    def recommend(self, user_id, **kw):
        out = self.rec.recommend(user_id=user_id, **kw)
        u = int(np.flatnonzero(np.asarray(self.rec.user_ids) == user_id)[0])
        hist = np.asarray(self.rec.histories[u])[-self.rec.model.config['max_len']:]
        pick = lambda b: list(self.rec.item_index[self.rng.choice(hist, len(b), replace=False)]) if self.how == 'random' else []
        out['because'] = [pick(b) if len(b) else b for b in out['because']]
        return out

def assert_explanations_faithful(chk: pd.DataFrame):
    """Removing the named history items lowers the recommended item's score, and more than removing as many random
    ones. Measured on the fixture's model (model seeds 0, 1, 2; 20 users, top 3): 47 to 50 recommendations with
    reasons, the score drops for all of them, named beats random for 98-100%, median drop named / random 2.1x to 5.5x;
    with the reasons replaced by random history items: named beats random for 46-64%, ratio 0.9. Margins: at least 20
    recommendations checked, named beats random for 85%, median drop 1.5x the random one's."""
    assert len(chk) >= 20, len(chk)
    s = study.explanation_summary(chk).iloc[0]
    assert s['share_score_drops'] >= 0.95 and s['share_named_beats_random'] >= 0.85, s.to_dict()
    assert s['median_drop_named'] >= 1.5 * max(s['median_drop_random'], 0), s.to_dict()

@pytest.fixture(scope='module')
def explained(loo):
    from transferrec.recommend import Recommender
    return Recommender('sequential', item_repr='id', epochs=2, dim=16, max_len=8, progress=False).fit(loo)

def test_explanation_check_small(explained):
    chk = study.explanation_check(explained, np.arange(20), k=3)
    assert_explanations_faithful(chk)
    assert (chk['n_named'] >= 1).all() and np.isfinite(chk[['drop_named', 'drop_random']]).all().all()
    assert study.explanation_summary(chk)['recommendations'].iloc[0] == len(chk)

@pytest.mark.parametrize('how', ['random', 'none'])
def test_replaced_reasons_fail_the_faithfulness_check(explained, how):
    "Mutation: the reasons replaced by random history items (or removed: attributions zeroed) fail the same check."
    chk = study.explanation_check(ReasonsReplaced(explained, how), np.arange(20), k=3)
    with pytest.raises(AssertionError): assert_explanations_faithful(chk)

def test_configurations_do_not_read_the_environment_at_import(monkeypatch):
    "The study's constants are the same whatever the environment says; the encoder list is read when choose_model runs."
    code = "from transferrec import study; print(repr({k: v for k, v in vars(study).items() if k.isupper()}))"
    seen = [subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                           env={**os.environ, **extra}).stdout for extra in ({}, {'TRANSFERREC_STUDY_MODELS': '/x/big-model'})]
    assert seen[0] == seen[1] and study.CHOOSE_FULL['encoders'] is None
    monkeypatch.setenv('TRANSFERREC_STUDY_MODELS', '/x/big-model')
    assert study.encoder_specs()[-1]['path'] == '/x/big-model'
