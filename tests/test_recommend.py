"The Recommender end to end: fit, recommend for every kind of user, new items, save/load, bad input."
import json
import numpy as np, pandas as pd, pytest, torch
from transformers import GPT2Config, GPT2LMHeadModel, AutoTokenizer
from transferrec.core import DataError
from transferrec.data import synthetic, split
from transferrec.encoders import default_encoder_path
from transferrec.metrics import evaluate
from transferrec.benchmark import get_model
from transferrec.recommend import Recommender

SMALL = dict(epochs=6, patience=2, dim=32, max_len=20, progress=False)

@pytest.fixture(scope='module')
def data():
    return split(synthetic(n_users=150, n_items=120, interactions_per_user=20, seed=2), 'loo')

@pytest.fixture(scope='module')
def rec(data):
    return Recommender('sequential', item_repr='text+id', **SMALL).fit(data)

def test_scores_and_beats_random(rec, data):
    s = rec.score(np.arange(5))
    assert s.shape == (5, data.n_items) and np.isfinite(s).all()
    assert evaluate(rec, data)['ndcg@10'] > 2 * evaluate(get_model('random').fit(data), data)['ndcg@10']

def test_recommend_known_user_excludes_history(rec, data):
    uid = data.dataset.user_ids[3]
    out = rec.recommend(user_id=uid, k=7)
    assert list(out.columns) == ['item_id', 'title', 'score', 'because', 'why'] and len(out) == 7
    hist = set(data.dataset.item_ids[rec.histories[3]])
    assert not set(out['item_id']) & hist
    assert out['score'].is_monotonic_decreasing

def test_because_items_drive_the_score(rec, data):
    hist = data.dataset.item_ids[rec.histories[5]][-20:].tolist()
    out = rec.recommend(history=hist, k=3)
    top = out.iloc[0]
    assert top['because'], 'a recommendation with a history names its reasons'
    rest = [i for i in hist if i not in set(top['because'])]
    full = rec.recommend(history=rest, k=len(rec.items), exclude_seen=False, explain=False).set_index('item_id')
    assert full.loc[top['item_id'], 'score'] < top['score']

def test_reasons_are_material_and_never_empty(rec, data):
    "`because` names only items whose removal lowers the score; `why` says it in words, or what drove the item instead."
    titles = dict(zip(rec.items['item_id'], rec.items['title']))
    for u in range(10):
        out = rec.recommend(user_id=data.dataset.user_ids[u], k=10)
        assert out['why'].str.len().gt(0).all()
        for because, why in zip(out['because'], out['why']):
            assert all(f"{titles[i]} [{i}]" in why for i in because)
    hist = data.dataset.item_ids[rec.histories[5]][-20:].tolist()
    for row in rec.recommend(history=hist, k=5).itertuples():
        for i in row.because:
            rest = [h for h in hist if h != i]
            again = rec.recommend(history=rest, k=len(rec.items), exclude_seen=False, explain=False).set_index('item_id')
            assert again.loc[row.item_id, 'score'] < row.score
    assert (rec.recommend(text='ghost crypt', k=3)['why'] == 'close to the text you gave').all()


def test_exclude_leaves_out_items_and_keeps_k(rec, data):
    uid = data.dataset.user_ids[2]
    top = rec.recommend(user_id=uid, k=6, explain=False)['item_id'].tolist()
    assert rec.recommend(user_id=uid, k=4, exclude=top[:2], explain=False)['item_id'].tolist() == top[2:6]
    with pytest.raises(DataError, match=r'unknown item id\(s\) \[424242\]'): rec.recommend(user_id=uid, exclude=[424242])


def test_new_user_by_text_and_new_item(data):
    r = Recommender('sequential', item_repr='text', **SMALL).fit(data)
    by_text = r.recommend(text='haunting ghost crypt blood', k=5)
    assert len(by_text) == 5 and 'because' not in by_text
    r.add_items(pd.DataFrame({'item_id': [9999], 'title': ['Ghost of the Haunting Crypt'], 'genres': ['Horror']}))
    ranked = r.recommend(text='haunting ghost crypt blood', k=len(r.items), explain=False)
    assert 9999 in set(ranked['item_id']) and np.isfinite(ranked['score']).all()
    with pytest.raises(DataError, match='already in the catalogue'): r.add_items(pd.DataFrame({'item_id': [9999], 'title': ['x']}))

def test_id_model_refuses_text_and_new_items(data):
    r = Recommender('sequential', item_repr='id', **SMALL).fit(data)
    with pytest.raises(DataError, match='ID-only model'): r.recommend(text='anything')
    with pytest.raises(DataError, match='ID-only model'): r.add_items(pd.DataFrame({'item_id': [5000], 'title': ['x']}))

def test_save_load_identical(rec, data, tmp_path):
    rec.save(tmp_path/'run')
    back = Recommender.load(tmp_path/'run')
    users = np.arange(data.n_users)
    np.testing.assert_allclose(back.score(users), rec.score(users), atol=1e-5)
    pd.testing.assert_frame_equal(back.recommend(user_id=data.dataset.user_ids[0]), rec.recommend(user_id=data.dataset.user_ids[0]))
    meta = json.loads((tmp_path/'run'/'config.json').read_text())
    assert meta['transferrec_version'] and meta['settings']['seed'] == 0

def test_corrupt_and_incompatible_runs(rec, tmp_path):
    run = rec.save(tmp_path/'run')
    w = (run/'weights.safetensors').read_bytes()
    (run/'weights.safetensors').write_bytes(w[:len(w) // 2])
    with pytest.raises(DataError, match='corrupt'): Recommender.load(run)
    run = rec.save(tmp_path/'run')  # the atomic save replaces the damaged folder
    meta = json.loads((run/'config.json').read_text()); meta['format_version'] = 99
    (run/'config.json').write_text(json.dumps(meta))
    with pytest.raises(DataError, match='run format 99'): Recommender.load(run)
    (run/'config.json').write_text('{not json')
    with pytest.raises(DataError, match='corrupt'): Recommender.load(run)
    with pytest.raises(DataError, match='does not exist'): Recommender.load(tmp_path/'nowhere')
    (tmp_path/'empty').mkdir()
    with pytest.raises(DataError, match='no config.json'): Recommender.load(tmp_path/'empty')

def test_failed_save_keeps_previous_run(rec, tmp_path, monkeypatch):
    run = rec.save(tmp_path/'run')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    def boom(*a, **k): raise OSError('disk full')
    monkeypatch.setattr(np, 'savez', boom)
    with pytest.raises(OSError): rec.save(run)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ['run']  # no temporary folder left behind

def test_bad_calls(rec, data):
    uid = data.dataset.user_ids[0]
    with pytest.raises(DataError, match='unknown user id'): rec.recommend(user_id=-5)
    with pytest.raises(DataError, match='unknown item id'): rec.recommend(history=[123456])
    with pytest.raises(DataError, match='history is empty'): rec.recommend(history=[])
    with pytest.raises(DataError, match='positive integer'): rec.recommend(user_id=uid, k=0)
    with pytest.raises(DataError, match='exactly one'): rec.recommend(user_id=uid, text='x')
    with pytest.raises(DataError, match='unknown strategy'): Recommender('magic')
    with pytest.raises(DataError, match='unknown item representation'): Recommender('sequential', item_repr='picture')
    assert len(rec.recommend(user_id=uid, k=10_000)) == data.n_items - len(rec.histories[0])

def test_seeded_training_is_reproducible(data):
    a = Recommender('sequential', item_repr='id', **SMALL).fit(data)
    b = Recommender('sequential', item_repr='id', **SMALL).fit(data)
    np.testing.assert_array_equal(a.score(np.arange(10)), b.score(np.arange(10)))

def test_tiny_gpt2_decoder_through_the_same_api(data, tmp_path):
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=30522, n_positions=128)
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path/'gpt2')
    AutoTokenizer.from_pretrained(default_encoder_path()).save_pretrained(tmp_path/'gpt2')
    r = Recommender('sequential', item_repr='text', model=str(tmp_path/'gpt2'), **SMALL).fit(data)
    assert r.model.encoder().pooling == 'last'
    out = r.recommend(text='space rockets', k=3)
    assert len(out) == 3 and np.isfinite(out['score']).all()


def test_tuned_top_layers_train_save_and_load(data, tiny_bert, tmp_path):
    from transferrec.encoders import load_encoder, encode_texts
    from transferrec.data import item_text
    before = {k: v.clone() for k, v in load_encoder(tiny_bert).model.state_dict().items()}
    r = Recommender('sequential', item_repr='text', model=tiny_bert, trainable_layers=1, encoder_lr=1e-3, **SMALL).fit(data)
    after = r.model.encoder().model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all('layer.1.' in k for k in changed)  # the top layer moved, nothing below it did
    texts = item_text(data.dataset.items)
    tuned = encode_texts(texts, r.model.encoder(), cache_dir=False, progress=False)
    np.testing.assert_allclose(r.model.text_vectors, tuned, atol=1e-5)  # the catalogue's vectors come from the kept layers
    r.save(tmp_path/'run')
    back = Recommender.load(tmp_path/'run')
    np.testing.assert_allclose(back.score(np.arange(10)), r.score(np.arange(10)), rtol=1e-5, atol=1e-5)
    new = pd.DataFrame({'item_id': [10_001], 'title': ['Haunting of the Crypt'], 'genres': ['Horror']})
    a, b = r.add_items(new).recommend(history=list(data.dataset.item_ids[:3]), k=5), back.add_items(new).recommend(history=list(data.dataset.item_ids[:3]), k=5)
    pd.testing.assert_frame_equal(a, b)  # a new item is encoded by the tuned encoder in both


def test_tuned_layers_refused_where_there_are_none(data, tmp_path):
    with pytest.raises(DataError, match='no encoder to tune'): Recommender('sequential', item_repr='id', trainable_layers=1)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=30522, n_positions=128)).save_pretrained(tmp_path/'gpt2')
    AutoTokenizer.from_pretrained(default_encoder_path()).save_pretrained(tmp_path/'gpt2')
    with pytest.raises(DataError, match='BERT-family'):
        Recommender('sequential', model=str(tmp_path/'gpt2'), trainable_layers=1, **SMALL).fit(data)

def test_text_ids_survive_save_load(tmp_path):
    "Item ids '042' and '42' stay two distinct strings, and text user ids load without pickle."
    from transferrec.data import from_dataframes
    base = synthetic(n_users=12, n_items=10, interactions_per_user=6, seed=4)
    inter = base.interactions.copy()
    item_names = {i: ('042' if i == 1 else '42' if i == 2 else f'0{i:03d}') for i in base.items['item_id']}
    inter['item_id'] = inter['item_id'].map(item_names); inter['user_id'] = 'c' + inter['user_id'].astype(str)
    items = base.items.assign(item_id=base.items['item_id'].map(item_names))
    sp = split(from_dataframes(inter, items), 'loo')
    r = Recommender('sequential', item_repr='id', epochs=1, dim=8, max_len=5, progress=False).fit(sp)
    back = Recommender.load(r.save(tmp_path/'run'))
    assert back.items['item_id'].tolist() == r.items['item_id'].tolist()
    assert {'042', '42', '0003'} <= set(back.items['item_id']) and all(isinstance(i, str) for i in back.items['item_id'])
    assert np.load(tmp_path/'run'/'histories.npz', allow_pickle=False)['user_ids'].dtype.kind == 'U'
    assert back.user_ids.tolist() == r.user_ids.tolist() and 'c1' in back.user_ids.tolist()
    pd.testing.assert_frame_equal(back.recommend(user_id='c1', k=3), r.recommend(user_id='c1', k=3))
    assert back.recommend(history=['042', '42'], k=3)['item_id'].map(type).eq(str).all()

def test_predict_needs_a_rating_head(rec, data):
    with pytest.raises(DataError, match="strategy='multitask'|Recommender\\('multitask'"): rec.predict(data.test.head(3))
    mt = Recommender('multitask', item_repr='id', dim=8, epochs=2, eval_every=2, num_threads=1, progress=False).fit(data)
    pred = mt.predict(data.test)
    assert pred.shape == (len(data.test),) and np.isfinite(pred).all()
    np.testing.assert_array_equal(pred, mt.model.predict(data.test))
    with pytest.raises(DataError, match='user_idx'): mt.predict(data.test.drop(columns='user_idx'))

def test_reasons_match_rescoring_each_removal(rec, data):
    "The one-pass reasons are those found by rescoring the history without each recent item, one history at a time."
    from transferrec.recommend import REASON_WINDOW, MATERIAL_SHARE
    for u in (2, 7, 11):
        hist = np.asarray(rec.histories[u])[-rec.model.config['max_len']:]
        out = rec.recommend(user_id=data.dataset.user_ids[u], k=5)
        items = rec.item_index.get_indexer(out['item_id'])
        start = max(0, len(hist) - REASON_WINDOW)
        variants = [np.delete(hist, i) for i in range(start, len(hist))] + ([hist[start:]] if start else [])
        drop = rec.model.score_histories([hist])[0][items] - np.stack([rec.model.score_histories([v])[0][items] for v in variants])
        gain = np.clip(drop, 0, None); share = gain / np.maximum(gain.sum(0), 1e-12)
        for j, because in enumerate(out['because']):
            order = np.argsort(-drop[:len(hist) - start, j], kind='stable')[:3]
            best = [o for o in order if drop[o, j] > 1e-5 and share[o, j] >= MATERIAL_SHARE + 1e-4]
            expected = data.dataset.item_ids[hist[start + np.array(best, int)]].tolist()
            assert set(expected) <= set(because) and len(because) <= 3, (u, j, because, expected)


def test_bad_option_values_are_refused_by_the_api_as_by_the_command_line():
    "The Python API applies the command line's option rules: lr=-1 would train by gradient ascent, dim=0 fail in torch."
    for options, message in [({'lr': -1}, 'lr must be a positive number'), ({'dim': 0}, 'dim must be a positive integer'),
                             ({'dropout': 1.5}, 'dropout must be a rate'), ({'seed': -1}, 'seed must be an integer from 0'),
                             ({'retriever': {'strategy': 'two-tower', 'lr': float('nan')}}, 'lr must be a positive number')]:
        strategy = 'cross-encoder' if 'retriever' in options else 'sequential'
        with pytest.raises(DataError, match=message): Recommender(strategy, **options)


def test_wrong_argument_types_get_the_package_error():
    "recommend(history=5), text=5, exclude=7, ids that cannot be ids, benchmark(models=None): DataError naming the type."
    from transferrec.benchmark import benchmark
    s = split(synthetic(n_users=40, n_items=30, interactions_per_user=8, seed=1), 'loo')
    rec = Recommender('sequential', item_repr='id', epochs=1, dim=8, progress=False).fit(s)
    for kw, message in [(dict(history=5), 'history must be a list of item ids'), (dict(text=5), 'text must be a string'),
                        (dict(user_id=1, exclude=7), 'exclude must be a list'), (dict(history=['x']), "unknown item id")]:
        with pytest.raises(DataError, match=message): rec.recommend(**kw)
    with pytest.raises(DataError, match='models must be names'): benchmark(s, models=None, progress=False)
