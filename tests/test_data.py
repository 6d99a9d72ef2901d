"End to end tests of transferrec.data: loaders, cleaning, protocols, text and sampling."
import subprocess, sys, warnings, zipfile
import numpy as np, pandas as pd, pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from transferrec.core import DataError
from transferrec.data import Dataset, from_dataframes, load_csv, load_movielens, clean, split, item_text, sample_negatives, pointwise, balance, synthetic, clean_title, stats


def test_movielens_counts_and_fields(ml100k):
    assert (ml100k.n_users, ml100k.n_items, len(ml100k)) == (943, 1682, 100_000)
    assert {'user_id', 'item_id', 'rating', 'timestamp'} <= set(ml100k.interactions.columns)
    assert {'item_id', 'title', 'year', 'genres'} <= set(ml100k.items.columns)
    assert {'age', 'gender', 'occupation', 'zip'} <= set(ml100k.users.columns)
    row = ml100k.items.set_index('item_id').loc[1]
    assert (row.title, row.year, row.genres) == ('Toy Story', 1995, "Animation|Children's|Comedy")


def _write_official_ml100k(folder, ml):
    "Write ml-100k in the official GroupLens layout (u.data, u.item, u.user) from the loaded frames."
    from transferrec.data import ML100K_GENRES
    folder.mkdir()
    ml.interactions[['user_id', 'item_id', 'rating', 'timestamp']].astype({'rating': int}).to_csv(folder/'u.data', sep='\t', header=False, index=False)
    lines = []
    for r in ml.items.itertuples():
        flags = ['1' if g in r.genres.split('|') else '0' for g in ML100K_GENRES]
        lines.append('|'.join([str(r.item_id), f"{r.title} ({r.year})", '01-Jan-1995', '', 'http://x'] + flags))
    (folder/'u.item').write_text('\n'.join(lines) + '\n', encoding='latin-1', errors='replace')
    ml.users.to_csv(folder/'u.user', sep='|', header=False, index=False)


def test_official_archive_layout_folder_and_zip(tmp_path, ml100k):
    folder = tmp_path/'ml-100k'
    _write_official_ml100k(folder, ml100k)
    ds = load_movielens('ml-100k', path=folder)
    assert (ds.n_users, ds.n_items, len(ds)) == (943, 1682, 100_000)
    z = tmp_path/'ml-100k.zip'
    with zipfile.ZipFile(z, 'w') as zf:
        for p in folder.iterdir(): zf.write(p, f'ml-100k/{p.name}')
    dz = load_movielens('ml-100k', path=z)
    pd.testing.assert_frame_equal(ds.interactions, dz.interactions)
    assert dz.items.set_index('item_id').loc[1, 'title'] == 'Toy Story'


def test_ml1m_and_csv_layouts(tmp_path):
    d = tmp_path/'ml-1m'; d.mkdir()
    (d/'ratings.dat').write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (d/'movies.dat').write_text("10::GoldenEye (1995)::Action|Adventure|Thriller\n20::Usual Suspects, The (1995)::Crime|Thriller\n")
    (d/'users.dat').write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    ds = load_movielens('ml-1m', path=d)
    assert ds.items.set_index('item_id').loc[20, 'title'] == 'The Usual Suspects'
    c = tmp_path/'ml-latest-small'; c.mkdir()
    (c/'ratings.csv').write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n")
    (c/'movies.csv').write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n3,"Grumpier Old Men (1995)",(no genres listed)\n')
    dc = load_movielens('ml-latest-small', path=c)
    assert dc.items['genres'].tolist() == ['Adventure|Animation', '']


@pytest.mark.parametrize('raw,expected', [("Toy Story (1995)", ("Toy Story", 1995)),
                                          ("Shawshank Redemption, The (1994)", ("The Shawshank Redemption", 1994)),
                                          ("Age d'Or, L' (1930)", ("L'Age d'Or", 1930)),
                                          ("Babylon 5", ("Babylon 5", None))])
def test_clean_title(raw, expected):
    assert clean_title(raw) == expected


def test_bad_input_errors(tmp_path):
    with pytest.raises(DataError, match='unknown dataset'): load_movielens('ml-2k')
    with pytest.raises(DataError, match='does not exist'): load_csv(tmp_path/'missing.csv')
    (tmp_path/'cols.csv').write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"lack column\(s\) \['user_id', 'item_id'\]"): load_csv(tmp_path/'cols.csv')
    with pytest.raises(DataError, match='missing user_id'):
        from_dataframes(pd.DataFrame({'user_id': [1, np.nan], 'item_id': [1, 2]}))
    with pytest.raises(DataError, match='non-numeric rating'):
        from_dataframes(pd.DataFrame({'user_id': [1, 2], 'item_id': [1, 2], 'rating': [4, np.nan]}))
    with pytest.raises(DataError, match='empty'): from_dataframes(pd.DataFrame({'user_id': [], 'item_id': []}))
    (tmp_path/'empty.csv').write_text('')
    with pytest.raises(DataError, match='is empty'): load_csv(tmp_path/'empty.csv')
    (tmp_path/'latin.csv').write_bytes("user_id,item_id,title\n1,2,caf\xe9\n".encode('latin-1'))
    with pytest.warns(UserWarning, match='not UTF-8'):  # a clear fallback: read as cp1252, with a warning
        assert load_csv(tmp_path/'latin.csv').interactions['title'].tolist() == ['café']
    with pytest.raises(DataError, match='not valid utf-8'): load_csv(tmp_path/'latin.csv', encoding='utf-8')
    ds = synthetic(n_users=20, n_items=30, interactions_per_user=5)
    with pytest.raises(DataError, match='lower the thresholds'): clean(ds, min_user_interactions=50)
    with pytest.raises(DataError, match='unknown protocol'): split(ds, 'tomorrow')
    with pytest.raises(DataError, match='unknown user id'): ds.user_index([10_000])
    with pytest.raises(DataError, match='unknown item id'): ds.item_index([10_000])
    (tmp_path/'notml.zip').write_bytes(b'')
    with zipfile.ZipFile(tmp_path/'notml.zip', 'w') as zf: zf.writestr('readme.txt', 'hello')
    with pytest.raises(DataError, match='not a MovieLens archive'): load_movielens('ml-100k', path=tmp_path/'notml.zip')


def test_clean_dedupes_keeping_latest_and_kcore():
    inter = pd.DataFrame({'user_id': [1, 1, 1, 2, 2, 3], 'item_id': [1, 1, 2, 1, 2, 1],
                          'rating': [1.0, 5.0, 4.0, 4.0, 2.0, 5.0], 'timestamp': [20, 10, 5, 1, 2, 3]})
    ds = clean(from_dataframes(inter))
    assert len(ds) == 5
    assert ds.interactions.query('user_id == 1 and item_id == 1')['rating'].item() == 1.0  # the latest (t=20)
    k = clean(from_dataframes(inter), min_user_interactions=2, min_item_interactions=2)
    assert set(k.interactions['user_id']) == {1, 2} and k.n_items == 2
    imp = clean(from_dataframes(inter), implicit_threshold=4)
    assert (imp.interactions['rating'] >= 4).all()


@pytest.mark.parametrize('protocol', ['random', 'loo', 'cold'])
def test_split_no_leakage_ml100k(ml100k, protocol):
    s = split(ml100k, protocol, seed=0)
    idx = [set(df.index) for df in (s.train, s.valid, s.test)]
    assert sum(map(len, idx)) == len(ml100k) and len(set.union(*idx)) == len(ml100k)
    train_pairs = set(zip(s.train.user_idx, s.train.item_idx))
    assert not train_pairs & set(zip(s.test.user_idx, s.test.item_idx))
    if protocol == 'cold': assert not set(s.train.item_idx) & set(s.cold_items)
    if protocol == 'loo':
        assert s.test.user_idx.is_unique and len(s.test) == 943
        t = s.test.set_index('user_idx')['timestamp']
        assert (s.train.groupby('user_idx')['timestamp'].max() <= t.reindex(s.train.groupby('user_idx').size().index)).all()


def test_random_split_matches_recbole_rounding(ml100k):
    s = split(ml100k, 'random', seed=0)
    tot = ml100k.interactions.groupby('user_idx').size()
    n_test = s.test.groupby('user_idx').size().reindex(tot.index, fill_value=0)
    assert (n_test == np.floor(0.1 * tot).astype(int)).all()  # every ml-100k user has >= 20 ratings
    assert abs(len(s.train) / len(ml100k) - 0.8) < 0.01


def test_loo_stable_ties_keep_file_order():
    inter = pd.DataFrame({'user_id': [1] * 4, 'item_id': [9, 3, 7, 5], 'timestamp': [1, 2, 2, 2]})
    s = split(from_dataframes(inter), 'loo')
    assert s.test['item_id'].item() == 5 and s.valid['item_id'].item() == 7  # file order, not item id order


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_users=st.integers(1, 15), n_items=st.integers(2, 12), n=st.integers(1, 120), seed=st.integers(0, 10),
       protocol=st.sampled_from(['random', 'loo', 'cold']), data=st.data())
def test_split_properties(n_users, n_items, n, seed, protocol, data):
    users = data.draw(st.lists(st.integers(1, n_users), min_size=n, max_size=n))
    items = data.draw(st.lists(st.integers(1, n_items), min_size=n, max_size=n))
    ts = data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # repeated rows and pairs are reported; what matters here is the split
        ds = from_dataframes(pd.DataFrame({'user_id': users, 'item_id': items, 'timestamp': ts}))
        if protocol == 'cold' and ds.interactions.item_idx.nunique() < 2: return
        try: s = split(ds, protocol, seed=seed)
        except DataError: assert protocol == 'cold'; return
        s2 = split(ds, protocol, seed=seed)
    kept = ds.interactions.drop_duplicates(['user_idx', 'item_idx'])  # split keeps one interaction per pair
    parts = [set(df.index) for df in (s.train, s.valid, s.test)]
    assert sum(map(len, parts)) == len(kept) and len(set.union(*parts)) == len(kept)  # each in exactly one part
    pairs = [set(zip(df.user_idx, df.item_idx)) for df in (s.train, s.valid, s.test)]
    assert not pairs[0] & pairs[2] and not pairs[0] & pairs[1] and not pairs[1] & pairs[2]  # no leakage
    if protocol == 'cold': assert not set(s.train.item_idx) & set(s.cold_items)
    if protocol == 'loo':  # users with fewer than 3 interactions stay in train only; the others hold out 1 + 1
        per_user = kept.groupby('user_idx').size()
        assert set(s.test.user_idx) == set(per_user[per_user >= 3].index) and s.test.user_idx.is_unique
    for a, b in zip((s.train, s.valid, s.test), (s2.train, s2.valid, s2.test)): pd.testing.assert_frame_equal(a, b)



@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_users=st.integers(1, 12), n_items=st.integers(2, 12), n=st.integers(3, 120), span=st.integers(2, 50),
       cuts=st.tuples(st.floats(0.05, 0.9), st.floats(0.01, 0.5)), data=st.data())
def test_temporal_split_has_no_interaction_from_the_future(n_users, n_items, n, span, cuts, data):
    users = data.draw(st.lists(st.integers(1, n_users), min_size=n, max_size=n))
    items = data.draw(st.lists(st.integers(1, n_items), min_size=n, max_size=n))
    ts = data.draw(st.lists(st.integers(0, span), min_size=n, max_size=n))
    time_cuts = (cuts[0], min(cuts[0] + cuts[1], 0.99))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ds = from_dataframes(pd.DataFrame({'user_id': users, 'item_id': items, 'timestamp': ts}))
        try: s = split(ds, 'temporal', time_cuts=time_cuts)
        except DataError as e: assert 'leave a part empty' in str(e); return
    kept = ds.interactions.drop_duplicates(['user_idx', 'item_idx'], keep='last')
    if len(s.valid): assert s.train['timestamp'].max() < s.valid['timestamp'].min()
    if len(s.test): assert s.train['timestamp'].max() < s.test['timestamp'].min()   # nothing in training is later than any test interaction
    if len(s.valid) and len(s.test): assert s.valid['timestamp'].max() < s.test['timestamp'].min()
    assert set(s.valid.user_idx) | set(s.test.user_idx) <= set(s.train.user_idx)    # new users are reported apart
    parts = [set(df.index) for df in (s.train, s.valid, s.test)]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert sum(map(len, parts)) + s.info['new_user_rows'] == len(kept)
    assert s.info['new_items_test'] == len(set(s.test.item_idx) - set(s.train.item_idx))


ODD = ['', '   ', '\x00', 'a\x00b', '\u05e9\u05dc\u05d5\u05dd', 'e\u0301', '\U0001F468\u200d\U0001F469\u200d\U0001F467',
       '\ud800', '\u202eevil', '\t\n\r', '{title}', 'x' * 5000]


@settings(max_examples=40, deadline=None)
@given(titles=st.lists(st.one_of(st.none(), st.text(max_size=300), st.sampled_from(ODD), st.floats(), st.integers(),
                                 st.text(st.characters(exclude_categories=()), max_size=20)), min_size=0, max_size=5),
       template=st.sampled_from([None, '{title}', '{title}: {genres}', 'Film: {title}']))
def test_item_text_properties(titles, template):
    items = pd.DataFrame({'item_id': range(len(titles)), 'title': pd.Series(titles, dtype=object),
                          'genres': ['Drama|War'] * len(titles)})
    texts = item_text(items, template, max_chars=200)
    assert len(texts) == len(titles) and all(isinstance(t, str) and 0 < len(t) <= 200 for t in texts)
    for t, raw in zip(texts, titles):
        t.encode('utf-8')  # no lone surrogates left
        assert not any(ord(c) < 32 for c in t)  # no NUL or other control characters
        if raw is None: assert 'nan' not in t and 'None' not in t
    if template == '{title}':  # an item without text falls back to its id
        assert all(t == f'item {i}' for i, (t, raw) in enumerate(zip(texts, titles)) if raw is None)


def test_item_text_and_unicode():
    items = pd.DataFrame({'item_id': [1, 2], 'title': ['Amélie — 天使 🎬', 'x' * 100_000], 'year': [2001, None], 'genres': ['Comedy|Romance', '']})
    t = item_text(items)
    assert t[0] == 'Amélie — 天使 🎬 (2001). Genres: Comedy, Romance.' and len(t[1]) == 2000


def test_negative_sampling_and_balance():
    ds = synthetic(n_users=50, n_items=80, interactions_per_user=10)
    s = split(ds, 'random')
    m = s.matrix('train')
    users = np.repeat(np.arange(ds.n_users), 20)
    for strategy in ('uniform', 'popularity'):
        neg = sample_negatives(m, users, n=3, strategy=strategy, seed=1)
        assert neg.shape == (len(users), 3) and m[np.repeat(users, 3), neg.ravel()].sum() == 0
    pairs = pointwise(s, neg_ratio=3)
    b = balance(pairs)
    assert b['label'].value_counts().nunique() == 1 and len(b) == 2 * (pairs['label'] == 0).sum()
    with pytest.raises(DataError, match='unknown negative sampling'): sample_negatives(m, users, strategy='hard')


def test_synthetic_texts_carry_signal():
    ds = synthetic(seed=3)
    inter = ds.interactions.merge(ds.items[['item_id', 'genres']], on='item_id')
    top_share = inter.groupby('user_id')['genres'].agg(lambda g: g.value_counts().iloc[:2].sum() / len(g)).mean()
    assert top_share > 0.6  # users concentrate on their two genres (uniform over 6 would be ~0.33)


def test_stats(ml100k):
    s = stats(ml100k)
    assert (s['users'], s['items'], s['interactions']) == (943, 1682, 100_000)
    assert abs(s['density'] - 100_000 / (943 * 1682)) < 1e-12
