"""Batch jobs at scale (`transferrec.scale`): catalogue encoding, recommendations for every user and index building, in
this process and on a local Ray cluster (one per test session: 2 CPUs, loopback, no dashboard, a 200 MB object store).
Each Ray job runs while a worker kills itself once (Ray retries its task) and must write what the in-process job writes;
the in-process job resumes after an interruption."""
import os, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
from transferrec.core import DataError
from transferrec.data import load_movielens, item_text, synthetic, split
from transferrec.encoders import encode_texts
from transferrec.recommend import Recommender
from transferrec.retrieval import VectorIndex, recall_at_k, faiss_available
import transferrec.scale as scale
from transferrec.scale import (encode_catalogue, recommend_all, read_vectors, read_shard, shard_paths, build_index,
                               ray_available, require_ray, check_address)

LOADER = 'transferrec.cli:load_run'   # an import path every Ray worker resolves
EXE = str(Path(sys.executable).parent/'transferrec')
needs_ray = pytest.mark.skipif(not ray_available(), reason="ray (the scale extra) is not installed")

@pytest.fixture(scope='module')
def items(tmp_path_factory):
    d = tmp_path_factory.mktemp('items')
    it = load_movielens('ml-100k').items.head(60)
    it.assign(text=item_text(it))[['item_id', 'text']].to_parquet(d/'items.parquet')
    return d/'items.parquet'

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A small sequential run saved to a folder, and a users file of all its users."
    d = tmp_path_factory.mktemp('run')
    sp = split(synthetic(n_users=120, n_items=150, seed=0), 'loo')
    rec = Recommender('sequential', item_repr='id', epochs=2, dim=16, max_len=10, progress=False).fit(sp)
    rec.save(d/'run')
    pd.DataFrame({'user_id': rec.user_index.to_numpy()}).to_parquet(d/'users.parquet')
    return d/'run', d/'users.parquet'

@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    "One local Ray cluster for this file, with a folder where a test arms a worker to kill itself once."
    if not ray_available(): pytest.skip("ray (the scale extra) is not installed")
    crash = tmp_path_factory.mktemp('crash')
    stub = tmp_path_factory.mktemp('stub')
    # jsonschema imports rfc3987_syntax when installed (a Jupyter extra), which builds parsers for ~9 s: every Ray process
    # imports jsonschema, and the dashboard agent then misses the raylet's 15 s start deadline on a busy machine. Without
    # the package jsonschema skips the IRI format check, which Ray never uses.
    (stub/'rfc3987_syntax').mkdir()
    (stub/'rfc3987_syntax'/'__init__.py').write_text("raise ImportError('left out: slow to import')\n")
    old = {k: os.environ.get(k) for k in ('PYTHONPATH', 'TRANSFERREC_CRASH_ONCE')}
    os.environ['PYTHONPATH'] = os.pathsep.join([str(stub)] + [p for p in [old['PYTHONPATH']] if p])
    os.environ['TRANSFERREC_CRASH_ONCE'] = str(crash)
    ray = scale.connect(num_cpus=2)
    yield ray, crash
    ray.shutdown()
    for k, v in old.items():
        if v is None: os.environ.pop(k, None)
        else: os.environ[k] = v

def arm(crash: Path):
    (crash/'fired').unlink(missing_ok=True); (crash/'armed').write_text('1')

def topk_table(folder):
    return pd.concat([read_shard(p) for p in shard_paths(folder)[1]], ignore_index=True)

def test_encode_on_ray_survives_a_killed_worker_and_matches(items, cluster, tmp_path):
    ray, crash = cluster
    local = encode_catalogue(items, tmp_path/'local', shard_rows=10, threads=1, progress=False)
    arm(crash)
    remote = encode_catalogue(items, tmp_path/'ray', shard_rows=10, ray=True, progress=False)
    assert (crash/'fired').exists() and not (crash/'armed').exists()          # a worker died mid-job ...
    assert (local['encoded'], remote['encoded'], remote['rows']) == (6, 6, 60)  # ... and its shard was redone
    ids_l, v_l = read_vectors(tmp_path/'local')
    ids_r, v_r = read_vectors(tmp_path/'ray')
    assert (ids_l == ids_r).all()
    assert np.abs(v_l - v_r).max() < 1e-5
    texts = pd.read_parquet(items)['text'].tolist()
    assert np.abs(v_r - encode_texts(texts, cache_dir=False, progress=False)).max() < 1e-5
    assert encode_catalogue(items, tmp_path/'ray', shard_rows=10, ray=True, progress=False)['encoded'] == 0   # resumed: nothing left

def test_recommend_all_on_ray_survives_a_killed_worker_and_matches(run, cluster, tmp_path):
    ray, crash = cluster
    folder, users = run
    local = recommend_all(folder, users, tmp_path/'local', Recommender.load, k=5, shard_rows=30, progress=False)
    arm(crash)
    remote = recommend_all(folder, users, tmp_path/'ray', LOADER, k=5, shard_rows=30, ray=True, progress=False)
    assert (crash/'fired').exists()
    assert local['shards'] == remote['shards'] == remote['written'] == 4
    a, b = topk_table(tmp_path/'local'), topk_table(tmp_path/'ray')
    pd.testing.assert_frame_equal(a, b)
    rec = Recommender.load(folder)
    for u in rec.user_index[:5]:                  # the batch job answers what `recommend` answers
        one = rec.recommend(user_id=u, k=5, explain=False)
        got = a[a.user_id == u]
        assert got.item_id.tolist() == one.item_id.tolist()
        np.testing.assert_allclose(got.score, one.score, rtol=1e-5, atol=1e-5)

def test_recommend_all_with_reasons_and_an_index_on_ray(run, cluster, tmp_path):
    folder, users = run
    few = tmp_path/'few.parquet'
    pd.read_parquet(users).head(12).to_parquet(few)
    local = recommend_all(folder, few, tmp_path/'local', Recommender.load, k=4, reasons=True, shard_rows=6, progress=False)
    remote = recommend_all(folder, few, tmp_path/'ray', LOADER, k=4, reasons=True, shard_rows=6, ray=True, progress=False)
    a, b = topk_table(tmp_path/'local'), topk_table(tmp_path/'ray')
    pd.testing.assert_frame_equal(a, b)
    assert a['why'].str.len().gt(0).all() and len(a) == 48
    rec = Recommender.load(folder)
    one = rec.recommend(user_id=rec.user_index[0], k=4)
    assert a[a.user_id == rec.user_index[0]].why.tolist() == one.why.tolist()
    # an index broadcast once through the object store gives what the in-process index gives
    x = recommend_all(folder, users, tmp_path/'ix-local', Recommender.load, k=5, shard_rows=60, index_kind='hnsw', progress=False)
    y = recommend_all(folder, users, tmp_path/'ix-ray', LOADER, k=5, shard_rows=60, index_kind='hnsw', ray=True, progress=False)
    assert 'hnsw' in x['index'] and 'hnsw' in y['index']
    pd.testing.assert_frame_equal(topk_table(tmp_path/'ix-local'), topk_table(tmp_path/'ix-ray'))

def test_in_process_encode_resumes_after_an_interruption(items, tmp_path, monkeypatch):
    whole = encode_catalogue(items, tmp_path/'whole', shard_rows=10, threads=1, progress=False)
    real, calls = scale.encode_texts, []
    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 3: raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(scale, 'encode_texts', interrupted)
    with pytest.raises(KeyboardInterrupt): encode_catalogue(items, tmp_path/'cut', shard_rows=10, threads=1, progress=False)
    monkeypatch.setattr(scale, 'encode_texts', real)
    assert len(list((tmp_path/'cut').glob('part-*.parquet'))) == 2
    (tmp_path/'cut'/'part-00001.parquet').write_bytes(b'half a file')   # a damaged shard is redone, with a warning
    with pytest.warns(UserWarning, match='corrupt'):
        again = encode_catalogue(items, tmp_path/'cut', shard_rows=10, threads=1, progress=False)
    assert (again['encoded'], again['skipped']) == (5, 1)
    assert np.array_equal(read_vectors(tmp_path/'cut')[1], read_vectors(tmp_path/'whole')[1])
    assert whole['encoded'] == 6
    ix = build_index(tmp_path/'cut')
    assert ix.kind == 'exact' and ix.n_items == 60

@pytest.mark.skipif(not faiss_available(), reason='faiss-cpu (the faiss extra) is not installed')
def test_a_graph_index_from_shards_rescores_from_its_file(items, tmp_path):
    "build_index passes the large-catalogue options through: the graph in fewer directions, the rows in a file on disk."
    encode_catalogue(items, tmp_path/'vectors', shard_rows=16, progress=False)
    ids, vec = read_vectors(tmp_path/'vectors')
    ix = build_index(tmp_path/'vectors', kind='hnsw', dtype='int8', dims=48, rescore_file=tmp_path/'rows.npy', k_factor=5, ef_search=64)
    assert ix.projection.shape == (384, 48) and np.array_equal(np.load(tmp_path/'rows.npy'), vec)
    s, i = ix.search(vec[:10], 5)
    exact = VectorIndex(vec, kind='exact').search(vec[:10], 5)
    assert recall_at_k(i, exact[1]) >= 0.9
    np.testing.assert_allclose(s, np.take_along_axis(vec[:10] @ vec.T, i, 1), rtol=1e-5, atol=1e-5)

def test_bad_input_names_the_fix(items, run, tmp_path, monkeypatch):
    folder, users = run
    with pytest.raises(DataError, match='does not exist'): encode_catalogue(tmp_path/'none.parquet', tmp_path/'o')
    pd.DataFrame({'id': [1], 'text': ['a']}).to_parquet(tmp_path/'cols.parquet')
    with pytest.raises(DataError, match='no item_id column'): encode_catalogue(tmp_path/'cols.parquet', tmp_path/'o')
    with pytest.raises(DataError, match='no user_id column'): recommend_all(folder, items, tmp_path/'o2', Recommender.load)
    pd.DataFrame({'user_id': [-5]}).to_parquet(tmp_path/'strangers.parquet')
    with pytest.raises(DataError, match='not users of the run'): recommend_all(folder, tmp_path/'strangers.parquet', tmp_path/'o3', Recommender.load)
    with pytest.raises(DataError, match='cannot reach the Ray cluster'): check_address('127.0.0.1:9')
    monkeypatch.setitem(sys.modules, 'ray', None)      # Ray not installed
    assert not ray_available()
    with pytest.raises(DataError, match=r"pip install 'transferrec\[scale\]'"): require_ray()

def test_cli_encode_and_recommend_all(items, run, tmp_path, capsys):
    "The commands as `main` runs them (the entry point's own subprocess tests live in test_cli*.py; Python starts are slow here)."
    from transferrec.cli import main
    folder, users = run
    assert main(['encode', '--items', str(items), '--out', str(tmp_path/'v'), '--shard-rows', '30']) == 0
    assert read_vectors(tmp_path/'v')[1].shape == (60, 384) and 'encoded' in capsys.readouterr().out
    assert main(['recommend-all', '--run', str(folder), '--users', str(users), '--out', str(tmp_path/'t'), '--k', '3']) == 0
    assert len(topk_table(tmp_path/'t')) == 3 * 120
    for args, fragment in [(['encode', '--items', str(tmp_path/'no.parquet'), '--out', str(tmp_path/'x')], 'does not exist'),
                           (['encode', '--items', str(items), '--out', str(tmp_path/'x'), '--address', '127.0.0.1:9'], 'cannot reach'),
                           (['encode', '--items', str(items), '--out', str(tmp_path/'x'), '--shard-rows', '0'], '--shard-rows must be'),
                           (['recommend-all', '--run', str(folder), '--users', str(items), '--out', str(tmp_path/'y')], 'no user_id column')]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert fragment in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err

def test_help_shows_the_examples():
    r = subprocess.run([EXE, 'recommend-all', '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and 'example: transferrec recommend-all --run' in r.stdout
