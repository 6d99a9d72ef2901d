"""The Hugging Face side: save_pretrained/from_pretrained for every strategy (identical scores, no pickle read), the model
card, push_to_hub (offline: the folder it would upload), sentence-transformers folders both ways, a read-only cache."""
import errno, json, pickle, warnings
from pathlib import Path
import numpy as np, pytest, torch

from transferrec.core import DataError
from transferrec.data import split, synthetic, item_text
from transferrec.recommend import Recommender, STRATEGIES, parse_ids
from transferrec import encoders

TOWER = dict(history_items=5, user_max_length=32, item_max_length=16, batch_size=32, max_steps=10, eval_steps=10,
             lr=2e-3, temperature=0.1, warmup_steps=0, patience=None, eval_batch_size=256, num_threads=1, progress=False)
RERANK = dict(top_n=10, neg_ratio=2, history_items=5, max_length=48, batch_size=32, max_pairs=64, max_steps=2,
              eval_steps=2, eval_users=20, lr=1e-3, warmup_steps=0, patience=None, eval_batch_size=256, num_threads=1,
              progress=False)


@pytest.fixture(scope='module')
def data():
    return split(synthetic(n_users=50, n_items=40, interactions_per_user=10, seed=7), 'loo')


def _options(strategy, tiny_bert):
    if strategy == 'sequential': return dict(item_repr='text+id', epochs=2, dim=16, max_len=10, progress=False)
    if strategy == 'two-tower': return dict(model=tiny_bert, **TOWER)
    if strategy == 'multitask': return dict(item_repr='text+id', model=tiny_bert, dim=8, epochs=2, eval_every=2, num_threads=1, progress=False)
    return dict(model=tiny_bert, retriever={'strategy': 'two-tower', 'model': tiny_bert, **TOWER}, **RERANK)


@pytest.fixture(scope='module')
def fitted(data, tiny_bert):
    return {s: Recommender(s, **_options(s, tiny_bert)).fit(data) for s in STRATEGIES}


@pytest.fixture(scope='module')
def minilm():
    return encoders.load_encoder()


@pytest.fixture
def no_pickle(monkeypatch):
    "Record every file torch.load reads, and fail on any plain pickle.load(s)."
    opened = []
    real_load = torch.load
    def watched(f, *a, **k):
        opened.append(str(f)); return real_load(f, *a, **k)
    monkeypatch.setattr(torch, 'load', watched)
    monkeypatch.setattr(pickle, 'load', lambda *a, **k: pytest.fail('pickle.load called'))
    monkeypatch.setattr(pickle, 'loads', lambda *a, **k: pytest.fail('pickle.loads called'))
    return opened


@pytest.mark.parametrize('strategy', list(STRATEGIES))
def test_from_pretrained_scores_identically_without_reading_pickle(strategy, fitted, data, tmp_path, no_pickle):
    rec = fitted[strategy]
    folder = rec.save_pretrained(tmp_path/strategy)
    assert not [p for p in folder.rglob('*') if p.suffix in ('.pt', '.bin', '.pkl', '.pickle')]
    assert (folder/'README.md').exists() and json.loads((folder/'config.json').read_text())['format_version'] == 3
    planted = tmp_path/'pwned'
    class Evil:
        def __reduce__(self): return (Path.touch, (planted,))
    for pt in json.loads((folder/'config.json').read_text())['converted'].values():
        (folder/pt).write_bytes(pickle.dumps(Evil()))          # a malicious pickle where the strategy's .pt file was
    back = Recommender.from_pretrained(folder)
    assert not planted.exists()
    assert not [f for f in no_pickle if str(folder) in f]      # nothing inside the folder is unpickled
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(back.score(users), rec.score(users))
    if strategy != 'cross-encoder':
        from safetensors.numpy import load_file
        np.testing.assert_array_equal(load_file(folder/'item_vectors.safetensors')['item_vectors'], rec.model.item_matrix())


def test_model_card_and_metrics(fitted, tmp_path):
    rec = fitted['sequential']
    folder = rec.save(tmp_path/'run', metrics={'ndcg@10': 0.321, 'hr@10': 0.5})
    card = (folder/'README.md').read_text()
    head = card.split('---')[1]
    assert 'library_name: transferrec' in head and '- sequential' in head and 'datasets:\n- synthetic' in head
    assert '| ndcg@10 | 0.3210 |' in card and 'loo' in card and 'Intended use and limitations' in card
    (folder/'README.md').write_text(card + '\nedited by hand\n')   # the card is not checksummed
    assert Recommender.load(folder).metrics == {'ndcg@10': 0.321, 'hr@10': 0.5}


def test_old_run_format_still_loads(fitted, data, tmp_path):
    "A format-2 folder (weights.pt written by torch.save) loads; saving it again writes the new layout."
    rec = fitted['sequential']
    folder = rec.save(tmp_path/'run')
    meta = json.loads((folder/'config.json').read_text())
    from safetensors.torch import load_file
    torch.save(load_file(folder/'weights.safetensors'), folder/'weights.pt'); (folder/'weights.safetensors').unlink()
    (folder/'item_vectors.safetensors').unlink(); (folder/'README.md').unlink()
    files = {k: v for k, v in meta['files'].items() if k not in ('weights.safetensors', 'item_vectors.safetensors')}
    from transferrec.recommend import file_sha256
    files['weights.pt'] = file_sha256(folder/'weights.pt')
    meta.update(format_version=2, files=files); meta.pop('converted'); meta.pop('metrics')
    (folder/'config.json').write_text(json.dumps(meta))
    old = Recommender.load(folder)
    np.testing.assert_array_equal(old.score(np.arange(5)), rec.score(np.arange(5)))
    assert (old.save(tmp_path/'converted')/'weights.safetensors').exists()


def test_push_to_hub_uploads_the_saved_folder(fitted, data, tmp_path, monkeypatch):
    import huggingface_hub
    sent = {}
    def upload(self, repo_id, folder_path, **kw):
        import shutil
        shutil.copytree(folder_path, tmp_path/'sent'); sent.update(repo_id=repo_id, **kw)
        return 'https://huggingface.co/me/recs/commit/abc'
    monkeypatch.setattr(huggingface_hub.HfApi, 'create_repo', lambda self, repo_id, **kw: sent.update(created=repo_id, private=kw.get('private')))
    monkeypatch.setattr(huggingface_hub.HfApi, 'upload_folder', upload)
    rec = fitted['two-tower']
    assert rec.push_to_hub('me/recs', private=True) == 'https://huggingface.co/me/recs/commit/abc'
    assert sent['created'] == sent['repo_id'] == 'me/recs' and sent['private'] is True
    assert 'Recommender.from_pretrained("me/recs")' in (tmp_path/'sent'/'README.md').read_text()
    np.testing.assert_array_equal(Recommender.from_pretrained(tmp_path/'sent').score(np.arange(5)), rec.score(np.arange(5)))


def test_hub_errors_name_the_fix(fitted, monkeypatch):
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_OFFLINE', True)
    with pytest.raises(DataError, match='HF_HUB_OFFLINE'): Recommender.from_pretrained('someone/not-cached-here')
    with pytest.raises(DataError, match='does not exist'): Recommender.from_pretrained('./no/such/folder')
    with pytest.raises(DataError, match='HF_HUB_OFFLINE'): fitted['sequential'].push_to_hub('me/recs')


def test_parse_ids():
    import pandas as pd
    ints = pd.Index([1, 2, 3])
    assert parse_ids(['2', 3, ' -1'], ints, 'item') == [2, 3, -1]
    assert parse_ids([7, 'x'], pd.Index(['x']), 'user') == ['7', 'x']
    for bad in ['2.5', 'abc', True, 2**64, None]:
        with pytest.raises(DataError, match='item ids of this run are integers, got'): parse_ids([bad], ints, 'item')


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_sentence_transformers_folder_is_read_with_its_modules(minilm, tmp_path):
    st = pytest.importorskip('sentence_transformers')
    folder = tmp_path/'cls-st'; folder.mkdir()
    for p in encoders.default_encoder_path().iterdir():       # the bundled MiniLM, with another Pooling module
        if p.name not in ('1_Pooling', 'modules.json'): (folder/p.name).symlink_to(p)
    (folder/'modules.json').write_text((encoders.default_encoder_path()/'modules.json').read_text())
    (folder/'1_Pooling').mkdir()
    (folder/'1_Pooling'/'config.json').write_text(json.dumps({'embedding_dimension': 384, 'pooling_mode': 'cls', 'include_prompt': True}))
    enc = encoders.load_encoder(folder)
    assert (enc.pooling, enc.normalize) == ('cls', True)
    texts = ['Toy Story (1995). Animation|Comedy', 'Heat', 'a long film about rockets, galaxies and the people who fly them']
    ours = enc.encode(texts, cache_dir=False, progress=False)
    theirs = st.SentenceTransformer(str(folder), device='cpu').encode(texts)
    assert _cosines(ours, theirs).min() >= 0.9999 and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    mean = encoders.encode_texts(texts, minilm, cache_dir=False, progress=False)
    assert _cosines(ours, mean).min() < 0.99                      # the Pooling module changed the vectors
    (folder/'modules.json').write_text(json.dumps(json.loads((folder/'modules.json').read_text())
                                                  + [{'idx': 3, 'name': '3', 'path': '3_Dense', 'type': 'sentence_transformers.models.Dense'}]))
    with pytest.raises(DataError, match='Dense module'): encoders.load_encoder(folder)


@pytest.mark.parametrize('strategy', ['two-tower', 'sequential'])
def test_exported_item_tower_gives_the_recommenders_vectors(strategy, fitted, tiny_bert, data, tmp_path):
    st = pytest.importorskip('sentence_transformers')
    rec = fitted[strategy] if strategy == 'two-tower' else Recommender(
        'sequential', item_repr='text', model=tiny_bert, trainable_layers=1, epochs=1, dim=16, max_len=10, progress=False).fit(data)
    folder = rec.export_encoder(tmp_path/'tower')
    template = rec.model.config.get('template')
    theirs = st.SentenceTransformer(str(folder), device='cpu').encode(item_text(rec.items, template))
    ours = rec.model.item_matrix() if strategy == 'two-tower' else rec.model.text_vectors
    assert _cosines(ours, theirs).min() >= 0.9999
    if strategy == 'two-tower':
        assert np.allclose(np.linalg.norm(theirs, axis=1), 1, atol=1e-5)
    with pytest.raises(DataError, match='no text encoder'):
        Recommender('sequential', item_repr='id', epochs=1, dim=8, max_len=5, progress=False).fit(data).export_encoder(tmp_path/'x')


def test_read_only_cache_warns_once_and_still_encodes(minilm, tmp_path, monkeypatch):
    enc = minilm
    def refuse(*a): raise OSError(errno.EROFS, 'Read-only file system')
    monkeypatch.setattr(encoders.VectorCache, 'put', refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        a = encoders.encode_texts(['Heat', 'Alien'], enc, cache_dir=tmp_path, progress=False)
        b = encoders.encode_texts(['Heat'], enc, cache_dir=tmp_path, progress=False)
    messages = [str(w.message) for w in caught if 'vector cache' in str(w.message)]
    assert len(messages) == 1 and str(tmp_path) in messages[0] and 'TRANSFERREC_CACHE' in messages[0]
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)   # alone or in a batch: equal up to float noise
    np.testing.assert_array_equal(a, encoders.encode_texts(['Heat', 'Alien'], enc, cache_dir=False, progress=False))
    full = tmp_path/'full'
    monkeypatch.setattr(encoders.VectorCache, '__init__', lambda self, *a: refuse())
    with pytest.warns(UserWarning, match='TRANSFERREC_CACHE'): encoders.encode_texts(['Heat'], enc, cache_dir=full, progress=False)

