"""Bad files, bad values and the vector cache: every case through the Python API and through `transferrec data`
(exit status 2, one line `transferrec data: error: ...`, no traceback), plus property-based tests of the loaders."""
import os, re, subprocess, sys, time, warnings, zipfile
from pathlib import Path
import numpy as np, pandas as pd, pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from transferrec.cli import main
from transferrec.core import DataError
from transferrec.data import from_dataframes, load_csv, load_movielens, clean, split, item_text, synthetic

GOOD = "user_id,item_id,rating,timestamp\n1,10,4,881250949\n1,11,5,881250950\n2,10,3,881250951\n"


def cli(capsys, *args):
    "Run `transferrec data ...` in-process; the exit status, stdout and stderr."
    code = main(['data', *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_cli_error(capsys, args, *fragments):
    code, out, err = cli(capsys, *args)
    assert code == 2, (out, err)
    assert err.startswith('transferrec data: error: ') and len(err.strip().splitlines()) == 1, err
    assert 'Traceback' not in err
    for f in fragments: assert f in err, (f, err)


def write(tmp_path, name, content):
    p = tmp_path/name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


# ---------------------------------------------------------------------------------------------- bad files
FILE_CASES = {  # name: (file content or None for "no file", sep, fragments of the error)
    'missing': (None, ',', ['does not exist', 'check the path']),
    'empty': (b'', ',', ['is empty', 'header line']),
    'blank lines': (b'\n\n  \n', ',', ['is empty']),
    'semicolon read with comma': ("user_id;item_id;rating\n1;10;4\n2;11;3\n", ',', ["';'-separated", "sep=';'", '--sep']),
    'semicolon with decimal commas': ("user_id;item_id;rating\n1;10;4,5\n2;11;3\n", ',', ["sep=';'"]),
    'tab read with comma': ("user_id\titem_id\n1\t10\n2\t11,5\n", ',', ["'\\t'-separated"]),
    'comma read with tab': (GOOD, '\t', ["','-separated", "sep=','"]),
    'missing columns': ("user,item\n1,10\n", ',', ["columns={'your_name': 'user_id'"]),
    'no header': ("1,10,4,881250949\n2,11,3,881250950\n", ',', ['looks like data, not a header', 'user_id,item_id']),
    'header only': ("user_id,item_id,rating\n", ',', ['has a header line (user_id, item_id, rating) but no data rows']),
    'cut-off last line': (GOOD + "2,11", ',', ['looks cut off', 'dropna=True']),
    'cut-off quoted field': ('user_id,item_id,title\n1,10,"Toy St', ',', ['could not be parsed', 'quotes closed']),
}


@pytest.mark.parametrize('case', FILE_CASES)
def test_bad_file_api_and_cli(tmp_path, capsys, case):
    content, sep, fragments = FILE_CASES[case]
    path = tmp_path/'inter.csv' if content is None else write(tmp_path, 'inter.csv', content)
    with pytest.raises(DataError) as e: load_csv(path, sep=sep)
    for f in fragments: assert f in str(e.value), (f, str(e.value))
    assert str(path) in str(e.value) or case == 'no header'  # the message names the file
    assert_cli_error(capsys, ['--dataset', path, '--sep', sep], *fragments)


def test_missing_columns_cli_names_the_flag(tmp_path, capsys):
    "The command line's fix is a flag, with the value that maps the file's own names."
    path = write(tmp_path, 'inter.csv', "user,item\n1,10\n")
    assert_cli_error(capsys, ['--dataset', path], '--columns user_id=user,item_id=item')


def test_folder_instead_of_file(tmp_path, capsys):
    with pytest.raises(DataError, match='is a folder, not a file'): load_csv(tmp_path)
    (tmp_path/'ratings').mkdir()
    assert_cli_error(capsys, ['--dataset', tmp_path/'ratings'], 'is a folder')


def test_cut_off_last_line_dropped_on_request(tmp_path):
    path = write(tmp_path, 'inter.csv', GOOD + "2,11")
    with pytest.warns(UserWarning, match='dropped that line'): ds = load_csv(path, dropna=True)
    assert len(ds) == 3


def test_not_utf8_falls_back_with_a_warning(tmp_path, capsys):
    inter = write(tmp_path, 'inter.csv', GOOD)
    items = write(tmp_path, 'items.csv', "item_id,title\n10,Caf\xe9 \u201cNoir\u201d\n11,Heat\n".encode('cp1252'))
    with pytest.warns(UserWarning, match=r"not UTF-8 \(byte 0xe9 on line 2\): read it as cp1252"):
        ds = load_csv(inter, items)
    assert ds.items.set_index('item_id').loc[10, 'title'] == 'Café “Noir”'
    with pytest.raises(DataError, match=r"not valid utf-8 text \(byte 0xe9 on line 2\).*encoding='cp1252'"):
        load_csv(inter, items, encoding='utf-8')
    assert load_csv(inter, items, encoding='latin-1').n_items == 2  # an explicit encoding is used as given
    with pytest.raises(DataError, match="unknown encoding 'klingon'"): load_csv(inter, encoding='klingon')
    bad = write(tmp_path, 'bad.csv', b'user_id,item_id\n1,\x81\x8d\n')  # undefined in cp1252: latin-1 reads anything
    with pytest.warns(UserWarning, match='read it as latin-1'): assert len(load_csv(bad)) == 1
    code, out, _ = cli(capsys, '--dataset', inter, '--items', items)
    assert code == 0 and re.search(r'interactions +3\n', out)


def test_movielens_u_item_is_latin1_and_still_loads(ml100k):
    assert ml100k.items.set_index('item_id').loc[1, 'title'] == 'Toy Story'
    assert ml100k.items['title'].str.contains('é').any()  # latin-1 accents read correctly


def test_extra_columns_are_kept(tmp_path, capsys):
    path = write(tmp_path, 'inter.csv', "user_id,item_id,rating,timestamp,device,note\n1,10,4,881250949,tv,ok\n2,11,3,881250950,phone,\n")
    ds = load_csv(path)
    assert ds.interactions['device'].tolist() == ['tv', 'phone'] and len(ds) == 2
    code, out, _ = cli(capsys, '--dataset', path)
    assert code == 0 and re.search(r'interactions +2\n', out)


def test_zip_that_is_not_movielens(tmp_path, capsys):
    z = tmp_path/'data.zip'
    with zipfile.ZipFile(z, 'w') as zf: zf.writestr('readme.txt', 'hello'); zf.writestr('notes.txt', 'x')
    with pytest.raises(DataError, match=r"not a MovieLens archive.*readme.txt.*grouplens"): load_movielens('ml-100k', path=z)
    assert_cli_error(capsys, ['--dataset', 'ml-100k', '--path', z], 'not a MovieLens archive')
    with pytest.raises(DataError, match='zip archive of 2 files; unzip it'): load_csv(z)
    assert_cli_error(capsys, ['--dataset', z], 'unzip it')


def test_damaged_or_incomplete_movielens(tmp_path, capsys):
    bad = write(tmp_path, 'ml-100k.zip', b'PK\x03\x04' + os.urandom(64))  # a partial download
    with pytest.raises(DataError, match='neither a folder nor a zip archive.*damaged'): load_movielens('ml-100k', path=bad)
    assert_cli_error(capsys, ['--dataset', 'ml-100k', '--path', bad], 'damaged')
    part = tmp_path/'ml-100k'; part.mkdir(); (part/'u.data').write_text("1\t10\t4\t881250949\n")
    with pytest.raises(DataError, match=r"lacks 'u.item'.*download it again"): load_movielens('ml-100k', path=part)
    assert_cli_error(capsys, ['--dataset', 'ml-100k', '--path', part], "lacks 'u.item'")
    z = tmp_path/'ml.zip'
    with zipfile.ZipFile(z, 'w') as zf: zf.writestr('ml-100k/u.data', "1\t10\t4\t881250949\n")
    with pytest.raises(DataError, match='is a MovieLens archive, not a CSV file.*load_movielens'): load_csv(z)


# ---------------------------------------------------------------------------------------------- bad values
VALUE_CASES = {  # name: (interactions CSV, fragments of the error), each error names the line
    'NaN user id': ("user_id,item_id\n1,10\n,11\n", ['1 row with a missing user_id', 'line 3 of']),
    'empty item id': ("user_id,item_id\n1,10\n2, \n", ['missing item_id', 'line 3 of']),
    'non-numeric rating': ("user_id,item_id,rating\n1,10,4\n2,11,four\n", ["non-numeric rating (e.g. 'four')", 'line 3']),
    'non-numeric timestamp': ("user_id,item_id,timestamp\n1,10,881250949\n2,11,yesterday\n",
                              ["non-numeric timestamp (e.g. 'yesterday')", 'line 3']),
    'negative timestamp': ("user_id,item_id,timestamp\n1,10,881250949\n2,11,-5\n", ['negative timestamp, before 1970', 'line 3']),
    'millisecond timestamps': ("user_id,item_id,timestamp\n1,10,881250949\n2,11,1700000000000\n3,12,1700000001000\n",
                               ['2 rows with a timestamp in the future', 'look like milliseconds, divide the column by 1,000',
                                'lines 3, 4']),
    'far future timestamp': ("user_id,item_id,timestamp\n1,10,881250949\n2,11,4102444800\n", ['in the future', 'year 2100']),
}


@pytest.mark.parametrize('case', VALUE_CASES)
def test_bad_value_api_and_cli(tmp_path, capsys, case):
    content, fragments = VALUE_CASES[case]
    path = write(tmp_path, 'inter.csv', content)
    with pytest.raises(DataError) as e: load_csv(path)
    for f in fragments + ['dropna=True']: assert f in str(e.value), (f, str(e.value))
    assert_cli_error(capsys, ['--dataset', path], *fragments)
    with pytest.warns(UserWarning, match='dropped them'): assert len(load_csv(path, dropna=True)) >= 1


def test_bad_values_in_frames_name_the_row():
    with pytest.raises(DataError, match=r"missing user_id \(NaN or empty\) at row 'b'"):
        from_dataframes(pd.DataFrame({'user_id': [1, None], 'item_id': [1, 2]}, index=['a', 'b']))
    with pytest.raises(DataError, match=r"non-numeric rating \(e.g. NaN\) at row 1"):
        from_dataframes(pd.DataFrame({'user_id': [1, 2], 'item_id': [1, 2], 'rating': [4, np.nan]}))
    with pytest.raises(DataError, match='look like nanoseconds'):
        from_dataframes(pd.DataFrame({'user_id': [1], 'item_id': [1], 'timestamp': [1_700_000_000 * 10**9]}))


def test_dates_become_unix_seconds():
    "Dates as strings or datetimes (any resolution) become Unix seconds; times without a zone count as UTC."
    want = [1577836800, 1609495200]
    dates = pd.to_datetime(['2020-01-01', '2021-01-01 10:00'], format='mixed')
    for ts in (['2020-01-01', '2021-01-01 10:00'], dates, dates.as_unit('s'),
               (dates + pd.Timedelta(hours=1)).tz_localize('Europe/Paris')):
        ds = from_dataframes(pd.DataFrame({'user_id': [1, 2], 'item_id': [1, 2], 'timestamp': ts}))
        assert ds.interactions['timestamp'].tolist() == want


def test_ids_keep_their_form():
    inter = pd.DataFrame({'user_id': ['007', '7', 'a'], 'item_id': [1.0, 2.0, 3.0]})
    ds = from_dataframes(inter)
    assert list(ds.user_ids) == ['007', '7', 'a'] and ds.interactions['item_id'].dtype == np.int64
    with pytest.warns(UserWarning, match='mixes value types'):
        assert list(from_dataframes(pd.DataFrame({'user_id': [1, 'a'], 'item_id': [1, 2]})).user_ids) == ['1', 'a']


def test_duplicate_rows_are_reported_and_never_leak(tmp_path, capsys):
    rows = "user_id,item_id,timestamp\n" + "".join(f"1,{i},{100 + i}\n" for i in range(10)) + "1,3,103\n1,4,500\n"
    path = write(tmp_path, 'inter.csv', rows)
    with pytest.warns(UserWarning, match=r'1 row repeating an earlier row exactly \(line 12 of'): ds = load_csv(path)
    assert len(ds) == 12 and len(clean(ds)) == 10  # clean keeps the latest of each pair
    for protocol in ('random', 'loo', 'cold'):
        with pytest.warns(UserWarning, match='2 interactions repeat a'): s = split(ds, protocol, seed=1)
        pairs = [set(zip(p.user_idx, p.item_idx)) for p in (s.train, s.valid, s.test)]
        assert not pairs[0] & pairs[1] and not pairs[0] & pairs[2] and not pairs[1] & pairs[2]
        assert sum(map(len, (s.train, s.valid, s.test))) == 10
    assert split(ds, 'loo', seed=1).test['timestamp'].item() == 500  # the latest (1, 4) is the last interaction
    code, out, _ = cli(capsys, '--dataset', path)
    assert code == 0 and re.search(r'interactions +12\n', out)


def test_user_with_one_interaction_under_loo(capsys, tmp_path):
    "Users with fewer than 3 interactions have nothing to hold out: they stay in train only (documented), no crash."
    inter = pd.DataFrame({'user_id': [1, 2, 2, 3, 3, 3, 3], 'item_id': [1, 1, 2, 1, 2, 3, 4], 'timestamp': range(7)})
    s = split(from_dataframes(inter), 'loo')
    assert s.test['user_id'].tolist() == [3] and s.valid['user_id'].tolist() == [3]
    assert s.train.groupby('user_id').size().to_dict() == {1: 1, 2: 2, 3: 2}
    only = split(from_dataframes(inter.head(1)), 'loo')
    assert len(only.train) == 1 and len(only.valid) == len(only.test) == 0


def test_item_without_text_gets_its_id(tmp_path, capsys):
    items = pd.DataFrame({'item_id': [10, 11, 12], 'title': ['Heat', None, '  '], 'genres': ['Crime', None, '']})
    assert item_text(items) == ['Heat. Genres: Crime.', 'item 11.', 'item 12.']
    assert item_text(items, '{title}') == ['Heat', 'item 11', 'item 12']
    assert item_text(items, '{title}: {genres}')[1] == 'item 11'
    with pytest.raises(DataError, match='cannot be filled in'): item_text(items, '{0}')
    with pytest.raises(DataError, match='max_chars must be a positive integer'): item_text(items, max_chars=0)
    inter = write(tmp_path, 'inter.csv', GOOD)
    its = write(tmp_path, 'items.csv', "item_id,title\n10,\n11,Heat\n")
    assert load_csv(inter, its).n_items == 2
    code, _, _ = cli(capsys, '--dataset', inter, '--items', its)
    assert code == 0


UNUSUAL = ['שלום עולם', '\u202eevil\u202c title', 'Amélie 🎬 👨\u200d👩\u200d👧', 'e\u0301te\u0301', 'a\x00b', '\ud800 lone',
           'tab\tand\nnewline', '']


def test_unusual_unicode_titles(tmp_path, capsys):
    items = pd.DataFrame({'item_id': range(len(UNUSUAL)), 'title': pd.Series(UNUSUAL, dtype=object)})  # pyarrow strings refuse lone surrogates
    texts = item_text(items, '{title}')
    assert texts[3] == '\u00e9t\u00e9'  # combining marks composed (NFC)
    assert texts[4] == 'a b' and texts[5] == '\ufffd lone' and texts[6] == 'tab and newline' and texts[7] == 'item 7'
    assert texts[0] == 'שלום עולם' and '🎬' in texts[2] and '\u200d' in texts[2]  # RTL, emoji, joiners kept
    for t in texts: t.encode('utf-8')
    inter = write(tmp_path, 'inter.csv', "user_id,item_id\n1,0\n2,1\n")
    its = write(tmp_path, 'items.csv', ('item_id,title\n' + ''.join(f'{i},"{t}"\n' for i, t in enumerate(UNUSUAL[:4]))).encode())
    ds = load_csv(inter, its)
    assert ds.items.set_index('item_id').loc[0, 'title'] == 'שלום עולם'
    assert cli(capsys, '--dataset', inter, '--items', its)[0] == 0


def test_kcore_that_empties_names_the_threshold(tmp_path, capsys):
    ds = synthetic(n_users=20, n_items=30, interactions_per_user=5)
    with pytest.raises(DataError, match=r'min_user_interactions=50 is more than any user has \(the most is 5\).*--min-user'):
        clean(ds, min_user_interactions=50)
    with pytest.raises(DataError, match=r'min_item_interactions=500 is more than any item has.*--min-item'):
        clean(ds, min_item_interactions=500)
    with pytest.raises(DataError, match=r'implicit_threshold=9 keeps no rating \(the highest is 5\)'):
        clean(ds, implicit_threshold=9)
    with pytest.raises(DataError, match=r'k-core filtering with min_user_interactions=5 and min_item_interactions=6'):
        clean(ds, min_user_interactions=5, min_item_interactions=6)
    path = write(tmp_path, 'inter.csv', GOOD)
    assert_cli_error(capsys, ['--dataset', path, '--min-user', 9], 'lower the thresholds', 'min_user_interactions=9',
                     'the most is 2', '--min-user')
    assert_cli_error(capsys, ['--dataset', path, '--implicit', 6], 'implicit_threshold=6.0 keeps no rating')


def test_split_arguments():
    ds = synthetic(n_users=10, n_items=20, interactions_per_user=5)
    with pytest.raises(DataError, match='ratios must be three'): split(ds, ratios=(0.8, 0.3, 0.1))
    with pytest.raises(DataError, match='unknown protocol'): split(ds, 'tomorrow')
    with pytest.raises(DataError, match='two increasing quantiles'): split(ds, 'temporal', time_cuts=(0.9, 0.5))
    untimed = from_dataframes(ds.interactions[['user_id', 'item_id']])
    with pytest.raises(DataError, match="needs a 'timestamp' column"): split(untimed, 'temporal')


# ---------------------------------------------------------------------------------------------- properties
ids_st = st.one_of(st.lists(st.integers(-5, 10**12), min_size=1, max_size=6, unique=True),
                   st.lists(st.text('abcxyz019_-', min_size=1, max_size=6), min_size=1, max_size=6, unique=True))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(users=ids_st, items=ids_st, n=st.integers(1, 12), rating=st.booleans(), timestamp=st.booleans(),
       sep=st.sampled_from([',', ';', '\t']), data=st.data())
def test_loaders_round_trip(tmp_path, users, items, n, rating, timestamp, sep, data):
    pick = lambda vals: data.draw(st.lists(st.sampled_from(vals), min_size=n, max_size=n))
    df = pd.DataFrame({'user_id': pick(users), 'item_id': pick(items)})
    if rating: df['rating'] = data.draw(st.lists(st.sampled_from([1, 2.5, 5]), min_size=n, max_size=n))
    if timestamp: df['timestamp'] = data.draw(st.lists(st.integers(0, 1_700_000_000), min_size=n, max_size=n))
    path = tmp_path/f'inter{n}{sep!r}.csv'
    df.to_csv(path, sep=sep, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # repeated rows are reported, and kept
        for ds in (from_dataframes(df), load_csv(path, sep=sep)):
            got = ds.interactions
            assert len(got) == n and list(got.columns[:len(df.columns)]) == list(df.columns)
            for c in ('user_id', 'item_id'): assert got[c].astype(str).tolist() == df[c].astype(str).tolist()
            if rating: np.testing.assert_allclose(got['rating'], df['rating'])
            if timestamp: assert got['timestamp'].tolist() == df['timestamp'].tolist()
            assert ds.n_users == df['user_id'].nunique() and ds.n_items == df['item_id'].nunique()
            assert (ds.user_ids[got['user_idx']].astype(str) == df['user_id'].astype(str)).all()


# ---------------------------------------------------------------------------------------------- encoder inputs and cache
@pytest.fixture(scope='module')
def enc():
    import torch
    from transferrec.encoders import load_encoder
    torch.set_num_threads(1)
    return load_encoder()


def test_long_and_odd_texts_encode(enc):
    from transferrec.encoders import encode_texts
    long = ('Toy Story is a film about toys. ' * 3200)[:100_000]
    v = encode_texts([long], enc, cache_dir=False, progress=False)  # truncated to max_length tokens, not a crash
    assert v.shape == (1, 384) and np.isfinite(v).all()
    np.testing.assert_array_equal(v, encode_texts([long[:1000]], enc, cache_dir=False, progress=False))
    odd = encode_texts(UNUSUAL, enc, cache_dir=False, progress=False)  # NUL, RTL, emoji, a lone surrogate, ''
    assert odd.shape == (len(UNUSUAL), 384) and np.isfinite(odd).all()


def test_tokenizer_is_part_of_the_cache_key(enc, tmp_path):
    from transferrec import encoders as E
    base = E.encoder_identity(enc, 64)
    assert E.encoder_identity(enc, 64) == base and E.encoder_identity(enc, 32) != base
    enc.tokenizer(['x' * 300], truncation=True, max_length=8)  # per-call settings do not change the key
    assert E.encoder_identity(enc, 64) == base
    other = type(enc.tokenizer).from_pretrained(enc.name)
    other.add_tokens(['transferrec-token'])
    assert E.tokenizer_fingerprint(other) != E.tokenizer_fingerprint(enc.tokenizer)


def test_unusable_cache_folder_warns_and_still_encodes(enc, tmp_path):
    from transferrec.encoders import encode_texts
    blocker = tmp_path/'file'; blocker.write_text('x')  # a file where the cache folder should be
    with pytest.warns(UserWarning, match='vectors are not cached'):
        v = encode_texts(['Heat'], enc, cache_dir=blocker, progress=False)
    np.testing.assert_array_equal(v, encode_texts(['Heat'], enc, cache_dir=False, progress=False))


def test_stale_temporary_files_are_removed(enc, tmp_path):
    from transferrec.encoders import encode_texts
    encode_texts(['Heat'], enc, cache_dir=tmp_path, progress=False)
    (folder,) = (tmp_path/'encoders').iterdir()
    old, fresh = folder/'.tmp-dead', folder/'.tmp-writing'
    old.write_bytes(b'half a file'); fresh.write_bytes(b'being written')
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    encode_texts(['Heat'], enc, cache_dir=tmp_path, progress=False)
    assert not old.exists() and fresh.exists()  # a writer that died an hour ago; one at work now is left alone


WRITER = """
import sys, warnings, numpy as np
from transferrec.encoders import VectorCache
warnings.simplefilter('error')  # a corrupt shard seen by a writer fails the run
VectorCache.max_shards = 3  # compact often, so writers race on merges and deletions
root, seed = sys.argv[1], int(sys.argv[2])
c = VectorCache(root, {'test': 'concurrent'}, 4)
for i in range(40):
    keys = [f'{(seed * 1000 + i * 7 + j) % 60:032x}' for j in range(5)]
    c.put(keys, np.array([[int(k, 16)] * 4 for k in keys], np.float32))
    got = c.get(keys)
    assert all((v == int(k, 16)).all() for k, v in got.items()), 'a wrong vector'
"""


def test_concurrent_writers_do_not_corrupt_the_cache(tmp_path):
    from transferrec.encoders import VectorCache
    script = write(tmp_path, 'writer.py', WRITER)
    env = {**os.environ, 'PYTHONWARNINGS': 'error::UserWarning'}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path/'cache'), str(s)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    c = VectorCache(tmp_path/'cache', {'test': 'concurrent'}, 4)
    keys = [f'{k:032x}' for k in range(60)]
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no shard is corrupt
        got = c.get(keys)
    assert got and all((v == int(k, 16)).all() for k, v in got.items())
    assert not list(c.folder.glob('.tmp-*'))
