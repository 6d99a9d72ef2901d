"Vector indexes (exact, float16, FAISS IVF/HNSW) and the Recommender serving from them."
import numpy as np, pandas as pd, pytest
from transferrec.core import DataError
from transferrec.data import synthetic, split
from transferrec.retrieval import VectorIndex, recall_at_k, faiss_available, supports_index, top_items
import transferrec.recommend as recommend_module
from transferrec.recommend import Recommender

def clustered(n, d=24, centres=15, noise=0.6, seed=0):
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(99).standard_normal((centres, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + noise * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)

@pytest.fixture(scope='module')
def vecs():
    return clustered(3000), clustered(40, seed=1)

def test_exact_matches_full_sort(vecs):
    items, q = vecs
    s, i = VectorIndex(items, kind='exact', block=700).search(q, k=7)     # several blocks merged
    full = q @ items.T
    assert (i == np.argsort(-full, axis=1, kind='stable')[:, :7]).all()
    np.testing.assert_allclose(s, np.take_along_axis(full, i, 1), rtol=1e-5, atol=1e-5)
    assert (np.diff(s, axis=1) <= 0).all()

def test_exclude_and_small_catalogue(vecs):
    items, q = vecs
    ix = VectorIndex(items[:12], kind='exact')
    s, i = ix.search(q[:2], k=20, exclude=[np.arange(5), []])
    assert (i[0, :7] >= 5).all() and (i[0, 7:] == -1).all() and np.isinf(s[0, 7:]).all()   # only 7 items left
    assert sorted(i[1, :12].tolist()) == list(range(12)) and (i[1, 12:] == -1).all()

def test_float16_halves_memory_and_keeps_order(vecs):
    items, q = vecs
    a, b = VectorIndex(items, kind='exact'), VectorIndex(items, kind='exact', dtype='float16')
    assert b.memory_mb == pytest.approx(a.memory_mb / 2)
    assert recall_at_k(b.search(q, 10)[1], a.search(q, 10)[1]) >= 0.97
    np.testing.assert_allclose(b.search(q, 10)[0], a.search(q, 10)[0], atol=3e-3)

def test_auto_is_exact_for_small_catalogues(vecs):
    assert VectorIndex(vecs[0], kind='auto').kind == 'exact'

def test_torch_input_and_bad_input(vecs):
    import torch
    items, q = vecs
    ix = VectorIndex(torch.from_numpy(items), kind='exact')
    with pytest.raises(DataError, match='unknown index kind'): VectorIndex(items, kind='annoy')
    with pytest.raises(DataError, match='float32'): VectorIndex(items, dtype='int4')
    with pytest.raises(DataError, match='2-d'): VectorIndex(items[0])
    with pytest.raises(DataError, match='NaN'): VectorIndex(np.full((3, 4), np.nan))
    with pytest.raises(DataError, match='dimensions'): ix.search(q[:, :5])
    with pytest.raises(DataError, match='positive integer'): ix.search(q, k=0)
    with pytest.raises(DataError, match='one array'): ix.search(q[:2], exclude=[[1]])

@pytest.mark.skipif(not faiss_available(), reason='faiss-cpu (the faiss extra) is not installed')
@pytest.mark.parametrize('kind,dtype,opts', [('ivf', 'float32', dict(nlist=40, nprobe=10)), ('ivf', 'float16', dict(nlist=40, nprobe=10)),
                                             ('hnsw', 'float32', dict(ef_search=256)), ('hnsw', 'float16', dict(ef_search=256))])
def test_faiss_recall(vecs, kind, dtype, opts):
    items, q = vecs
    truth = VectorIndex(items, kind='exact').search(q, 10)[1]
    ix = VectorIndex(items, kind=kind, dtype=dtype, **opts)
    s, i = ix.search(q, 10, exclude=[truth[r, :2] for r in range(len(q))])
    assert not any(set(i[r]) & set(truth[r, :2]) for r in range(len(q)))
    assert recall_at_k(ix.search(q, 10)[1], truth) >= 0.9
    assert ix.memory_mb > 0 and ix.build_seconds >= 0 and kind in repr(ix)

@pytest.fixture(scope='module')
def rec():
    data = split(synthetic(n_users=120, n_items=150, interactions_per_user=15, seed=3), 'loo')
    return Recommender('sequential', item_repr='text', epochs=3, patience=2, dim=16, max_len=10, progress=False).fit(data)

def test_recommender_index_gives_the_same_recommendations(rec):
    uid = rec.user_ids[4]
    plain = rec.recommend(user_id=uid, k=8)
    everything = rec.recommend(user_id=uid, k=8, exclude_seen=False, explain=False)
    assert rec.index_ is None and supports_index(rec.model)
    ix = rec.build_index(kind='exact', dtype='float16')
    served = rec.recommend(user_id=uid, k=8)
    assert served['item_id'].tolist() == plain['item_id'].tolist()
    np.testing.assert_allclose(served['score'], plain['score'], rtol=1e-5, atol=1e-5)   # rescored exactly
    assert served['because'].tolist() == plain['because'].tolist()
    assert rec.recommend(user_id=uid, k=8, exclude_seen=False, explain=False)['item_id'].tolist() == everything['item_id'].tolist()
    rec.index_ = None

def test_large_catalogue_is_indexed_on_demand(rec, monkeypatch):
    monkeypatch.setattr(recommend_module, 'AUTO_THRESHOLD', 100)          # "large" for this test
    uid = rec.user_ids[7]
    out = rec.recommend(user_id=uid, k=5, explain=False)
    assert rec.index_ is not None and rec.index_.n_items == len(rec.items)
    rec.add_items(pd.DataFrame({'item_id': [99_999], 'title': ['Ghost of the Haunting Crypt'], 'genres': ['Horror']}))
    rec.recommend(user_id=uid, k=5, explain=False)
    assert rec.index_.n_items == len(rec.items)                           # rebuilt for the new item
    assert len(out) == 5 and np.isfinite(out['score']).all()
    rec.index_ = None

@pytest.mark.skipif(not faiss_available(), reason='faiss-cpu (the faiss extra) is not installed')
def test_a_faiss_index_is_tuned_to_the_recall_on_its_users(rec):
    ix = rec.build_index(kind='ivf', nlist=16)
    users = rec.model.user_vectors(rec.histories[:100])
    exact = VectorIndex(rec.model.item_matrix(), kind='exact').search(users, 10)[1]
    assert ix.tuned['recall'] >= 0.95 and ix.nprobe == ix.tuned['value'] and recall_at_k(ix.search(users, 10)[1], exact) >= 0.9
    assert all(r < 0.95 for width, r in ix.tuned['tried'].items() if width < ix.nprobe)   # the narrowest width that reaches it
    as_given = rec.build_index(kind='ivf', nlist=16, nprobe=1, recall=None)
    assert as_given.nprobe == 1 and 'tuned' not in vars(as_given)
    rec.index_ = None

def test_top_items_and_unsupported_strategy(rec):
    hist = rec.histories[0]
    top, scores = top_items(VectorIndex(rec.model.item_matrix()), rec.model, hist, 5, exclude=hist)
    full = rec.model.score_histories([hist])[0]; full[hist] = -np.inf
    assert top.tolist() == np.argsort(-full, kind='stable')[:5].tolist()
    assert not supports_index(object())
    r = Recommender('cross-encoder', retriever={'strategy': 'two-tower'}, progress=False)
    r.histories = []
    with pytest.raises(DataError, match='no item vectors'): r.build_index()

@pytest.mark.skipif(not faiss_available(), reason='faiss-cpu (the faiss extra) is not installed')
def test_ivfpq_rescores_exactly_and_builds_from_shards(vecs):
    items, q = vecs
    truth = VectorIndex(items, kind='exact').search(q, 10)[1]
    ix = VectorIndex(items, kind='ivfpq', nlist=30, nprobe=15, pq_m=12, k_factor=32, train_size=len(items))
    s, i = ix.search(q, 10)
    assert recall_at_k(i, truth) >= 0.9
    np.testing.assert_allclose(s, np.take_along_axis(q @ items.T, i, 1), rtol=1e-5, atol=1e-5)   # exact scores
    parts = np.array_split(items, 4)
    sharded = VectorIndex.from_shards([lambda p=p: p for p in parts], items, len(items), kind='ivfpq', nlist=30, nprobe=15, pq_m=12, k_factor=32)
    assert (sharded.search(q, 10)[1] == i).all()                  # same sample, same codes: the same answers
    back = VectorIndex.from_bytes(sharded.to_bytes())
    assert (back.search(q, 10)[1] == i).all() and back.kind == 'ivfpq'
    assert VectorIndex(items, kind='ivfpq', nlist=30, pq_m=12, refine='none').memory_mb < ix.memory_mb / 4
    with pytest.raises(DataError, match='does not divide'): VectorIndex(items, kind='ivfpq', pq_m=7)
    with pytest.raises(DataError, match='refine must be'): VectorIndex(items, kind='ivfpq', pq_m=12, refine='sq3')
    with pytest.raises(DataError, match='more than n_items'): VectorIndex.from_shards(parts, items, len(items) - 1, kind='exact')
    exact = VectorIndex.from_shards(parts, items[:5], len(items), kind='exact')
    assert (exact.search(q, 10)[1] == truth).all()

@pytest.mark.skipif(not faiss_available(), reason='faiss-cpu (the faiss extra) is not installed')
@pytest.mark.parametrize('dtype', ['float32', 'float16'])
def test_hnsw_from_shards_holds_only_the_shards(vecs, dtype):
    items, q = vecs
    truth = VectorIndex(items, kind='exact').search(q, 10)[1]
    sample = clustered(500, seed=7)                                  # not part of the catalogue: must not be searchable
    ix = VectorIndex.from_shards(np.array_split(items, 3), sample, len(items), kind='hnsw', dtype=dtype, ef_search=256)
    assert ix.index.ntotal == len(items)
    assert recall_at_k(ix.search(q, 10)[1], truth) >= 0.9

@pytest.mark.skipif(not faiss_available(), reason='faiss-cpu (the faiss extra) is not installed')
def test_hnsw_in_fewer_dimensions_rescored_from_disk(vecs, tmp_path):
    items, q = vecs
    truth = VectorIndex(items, kind='exact').search(q, 10)[1]
    path = tmp_path/'rows.npy'
    ix = VectorIndex.from_shards([lambda p=p: p for p in np.array_split(items, 3)], clustered(500, seed=7), len(items), kind='hnsw',
                                 dtype='int8', dims=20, rescore_file=path, k_factor=8, ef_search=256)
    s, i = ix.search(q, 10)
    assert recall_at_k(i, truth) >= 0.9
    np.testing.assert_allclose(s, np.take_along_axis(q @ items.T, i, 1), rtol=1e-5, atol=1e-5)   # exact scores, from the file
    assert ix.projection.shape == (24, 20) and ix.index.d == 20 and ix.index.ntotal == len(items)
    assert ix.disk_mb == pytest.approx(path.stat().st_size / 1e6) and (np.load(path) == items.astype(np.float32)).all()
    s2, i2 = ix.search(q[:1], 10, exclude=[i[0, :3]])
    assert not set(i2[0]) & set(i[0, :3]) and (i2[0, :7] == i[0, 3:]).all()
    back = VectorIndex.from_bytes(ix.to_bytes())
    assert (back.search(q, 10)[1] == i).all() and 're-scored from' in repr(back)

@pytest.mark.skipif(not faiss_available(), reason='faiss-cpu (the faiss extra) is not installed')
def test_an_interrupted_build_keeps_the_old_rescore_file(vecs, tmp_path):
    items, q = vecs
    path = tmp_path/'rows.npy'
    VectorIndex(items, kind='hnsw', dims=16, rescore_file=path)
    before = path.read_bytes()
    def interrupted(): raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        VectorIndex.from_shards([items[:1000], interrupted], items[:500], len(items), kind='hnsw', dims=16, rescore_file=path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ['rows.npy']   # no temporary file left

@pytest.mark.skipif(not faiss_available(), reason='faiss-cpu (the faiss extra) is not installed')
def test_rescore_file_errors_name_the_fix(vecs, tmp_path):
    items, q = vecs
    with pytest.raises(DataError, match='needs rescore_file'): VectorIndex(items, kind='hnsw', dims=8)
    with pytest.raises(DataError, match="options of kind='hnsw'"): VectorIndex(items, kind='ivf', rescore_file=tmp_path/'x.npy')
    with pytest.raises(DataError, match='must lie in'): VectorIndex(items, kind='hnsw', dims=99, rescore_file=tmp_path/'x.npy')
    with pytest.raises(DataError, match="is for kind='hnsw'"): VectorIndex(items, kind='exact', dtype='int8')
    data = VectorIndex(items, kind='hnsw', dims=16, rescore_file=tmp_path/'a.npy').to_bytes()
    np.save(tmp_path/'a.npy', items[:10])                            # another index's file under the same name
    with pytest.raises(DataError, match='belongs to another index'): VectorIndex.from_bytes(data)
    np.save(tmp_path/'a.npy', items.astype(np.float32))
    (tmp_path/'a.npy').write_bytes((tmp_path/'a.npy').read_bytes()[:-100])   # a copy cut short
    with pytest.raises(DataError, match='cut short'): VectorIndex.from_bytes(data)
    (tmp_path/'a.npy').unlink()
    with pytest.raises(DataError, match='is missing'): VectorIndex.from_bytes(data)

@pytest.mark.skipif(not faiss_available(), reason='faiss-cpu (the faiss extra) is not installed')
def test_ivfpq_train_iterations_reach_faiss(vecs):
    import faiss
    items, q = vecs
    ix = VectorIndex(items, kind='ivfpq', nlist=30, pq_m=12, train_iterations=3, train_size=len(items))
    assert faiss.extract_index_ivf(ix.index).cp.niter == 3
    assert recall_at_k(ix.search(q, 10)[1], VectorIndex(items, kind='exact').search(q, 10)[1]) >= 0.5
