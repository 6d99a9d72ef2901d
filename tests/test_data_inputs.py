"Bad and edge inputs at the data layer: ids kept as written, file types recognised by content, damaged or hostile files."
import gzip, os, sys, warnings, zipfile
import numpy as np, pandas as pd, pytest
from transferrec.core import DataError
from transferrec.data import Dataset, from_dataframes, load_csv, load_movielens, clean, split, item_text


def test_item_text_reads_a_text_column():
    items = pd.DataFrame({'item_id': [1, 2, 3], 'title': ['Heat', 'Up', None],
                          'text': ['A  heist\x00 in L.A.', None, '  ']})
    assert item_text(items) == ['A heist in L.A.', 'Up.', 'item 3.']   # cleaned; an empty text falls back
    assert item_text(items, '{title}') == ['Heat', 'Up', 'item 3']      # a template still wins
    assert item_text(items, '{text}')[0] == 'A heist in L.A.'
    assert len(item_text(items.assign(text='x' * 100_000), max_chars=50)[0]) == 50


def _error(f) -> str:
    with pytest.raises(DataError) as e: f()
    return str(e.value)


def _csv(path, text: str):
    path.write_text(text)
    return path


# ---------- ids kept as written


def test_ids_with_leading_zeros_stay_distinct(tmp_path):
    inter = _csv(tmp_path/'i.csv', "user_id,item_id\n042,042\n42,42\n7,042\n")
    items = _csv(tmp_path/'it.csv', "item_id,title\n042,Alien\n42,Heat\n")
    ds = load_csv(inter, items)
    assert list(ds.user_ids) == ['042', '42', '7'] and list(ds.item_ids) == ['042', '42']
    assert dict(zip(ds.items['item_id'], ds.items['title'])) == {'042': 'Alien', '42': 'Heat'}
    assert ds.item_index(['042', '42']).tolist() == [0, 1]
    # the same ids from a frame: one form, whichever the source
    fr = from_dataframes(pd.DataFrame({'user_id': ['042', '42', '7'], 'item_id': ['042', '42', '042']}),
                         pd.DataFrame({'item_id': ['042', '42'], 'title': ['Alien', 'Heat']}))
    assert list(fr.item_ids) == list(ds.item_ids) and list(fr.user_ids) == list(ds.user_ids)


def test_int_ids_in_one_table_and_zero_padded_in_the_other_do_not_collide():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ds = from_dataframes(pd.DataFrame({'user_id': [1, 2], 'item_id': [7, 8]}),
                             pd.DataFrame({'item_id': ['007', '7', '8'], 'title': ['Bond', 'Seven', 'Eight']}))
    assert sorted(ds.item_ids) == ['007', '7', '8']           # '007' is not 7: three items, none lost
    assert dict(zip(ds.items['item_id'], ds.items['title']))['7'] == 'Seven'
    assert not any('no row in the item table' in str(w.message) for w in caught)


def test_ids_written_as_floats_match_integer_ids(tmp_path):
    inter = _csv(tmp_path/'i.csv', "user_id,item_id,rating\n1.0,1.0,4\n2.0,2.0,5\n2.0,3.0,3\n")
    items = _csv(tmp_path/'it.csv', "item_id,title\n1,Alien\n2,Heat\n3,Up\n")
    with warnings.catch_warnings():
        warnings.simplefilter('error')                        # no "no row in the item table" warning
        ds = load_csv(inter, items)
    assert ds.n_items == 3 and ds.item_ids.dtype == np.int64 and list(ds.user_ids) == [1, 2]
    assert item_text(ds.items)[0] == 'Alien.'                 # texts found, not empty
    # float ids in the frame of the items, ints in the interactions
    fr = from_dataframes(pd.DataFrame({'user_id': [1], 'item_id': [1]}), pd.DataFrame({'item_id': [1.0, 2.0], 'title': ['a', 'b']}))
    assert fr.n_items == 2 and fr.item_ids.dtype == np.int64


def test_ids_that_differ_only_by_trailing_zero_are_not_merged():
    with pytest.warns(UserWarning, match='differ only by a trailing .0'):
        ds = from_dataframes(pd.DataFrame({'user_id': ['1', '1.0'], 'item_id': [1, 2]}))
    assert ds.n_users == 2


def test_tables_that_share_no_id_are_refused():
    msg = _error(lambda: from_dataframes(pd.DataFrame({'user_id': [1], 'item_id': ['1.5']}),
                                         pd.DataFrame({'item_id': ['x', 'y'], 'title': ['a', 'b']})))
    assert 'none of the 1 item ids' in msg and 'write ids differently' in msg


# ---------- rows and columns


def test_repeated_header_line_is_refused_or_dropped(tmp_path):
    f = _csv(tmp_path/'joined.csv', "user_id,item_id\n1,10\n2,11\nuser_id,item_id\n3,12\n")
    msg = _error(lambda: load_csv(f))
    assert 'repeating the header line' in msg and 'line 4 of' in msg and 'dropna=True' in msg
    with pytest.warns(UserWarning, match='line 4'):
        ds = load_csv(f, dropna=True)
    assert 'user_id' not in set(map(str, ds.user_ids)) and len(ds) == 3
    # with a rating column the header line would otherwise be blamed on a rating
    g = _csv(tmp_path/'joined2.csv', "user_id,item_id,rating\n1,10,4\nuser_id,item_id,rating\n")
    assert 'repeating the header line' in _error(lambda: load_csv(g))


def test_duplicate_item_ids_with_conflicting_titles(tmp_path):
    inter = _csv(tmp_path/'i.csv', "user_id,item_id\n1,1\n2,2\n")
    items = _csv(tmp_path/'it.csv', "item_id,title\n1,Alien\n2,Heat\n1,Aliens\n2,Heat\n")
    msg = _error(lambda: load_csv(inter, items))
    assert "1 item id (1) appears" in msg and 'lines 2, 4 of' in msg and "drop_duplicates('item_id')" in msg
    same = _csv(tmp_path/'same.csv', "item_id,title\n1,Alien\n2,Heat\n2,Heat\n")
    assert load_csv(inter, same).n_items == 2                 # exact repeats merge


def test_bom_windows_line_ends_and_untidy_column_names(tmp_path):
    f = tmp_path/'win.csv'
    f.write_bytes('\ufeffUser_ID ,  ITEM_id,Rating ,Timestamp\r\n007,1,4,881250949\r\n7,2,5,881250950\r\n'.encode())
    ds = load_csv(f)
    assert {'user_id', 'item_id', 'rating', 'timestamp'} <= set(ds.interactions.columns)
    assert list(ds.user_ids) == ['007', '7']                  # found as an id column: read as text
    assert ds.interactions['rating'].tolist() == [4.0, 5.0] and ds.interactions['timestamp'].tolist() == [881250949, 881250950]
    fr = from_dataframes(pd.DataFrame({' USER_ID': [1], 'Item_Id ': [2]}))
    assert fr.n_users == 1
    assert 'several columns named' in _error(lambda: from_dataframes(pd.DataFrame({'user_id': [1], 'User_ID ': [1], 'item_id': [1]}).rename(columns={'user_id': 'USER_ID'})))


@pytest.mark.parametrize('value', ['nan', 'inf', '-inf', ''])
def test_nan_and_inf_ratings_are_clear_errors(tmp_path, value):
    f = _csv(tmp_path/'r.csv', f"user_id,item_id,rating\n1,10,4\n2,11,{value}\n")
    msg = _error(lambda: load_csv(f))
    assert 'rating' in msg and 'line 3 of' in msg and 'dropna=True' in msg
    with pytest.warns(UserWarning, match='dropped'):
        assert len(load_csv(f, dropna=True)) == 1


@pytest.mark.parametrize('text, expect', [('', 'is empty'), ('  \n\n', 'is empty'), ('user_id,item_id\n', 'no data rows'),
                                          ('user_id,item_id\r\n', 'no data rows')])
def test_empty_and_header_only_files(tmp_path, text, expect):
    assert expect in _error(lambda: load_csv(_csv(tmp_path/'f.csv', text)))
    g = tmp_path/'f.csv.gz'; g.write_bytes(gzip.compress(text.encode()))
    assert expect in _error(lambda: load_csv(g))


# ---------- file types by content, and paths that are not files

RATINGS = b"user_id,item_id,rating\n1,10,4\n2,11,5\n3,10,3\n"


@pytest.mark.parametrize('name, pack', [('r.csv.gz', gzip.compress), ('r.csv', gzip.compress),  # a gzip named .csv
                                        ('r.csv.bz2', __import__('bz2').compress), ('r.xz', __import__('lzma').compress)])
def test_compressed_files_read_by_content(tmp_path, name, pack):
    (tmp_path/name).write_bytes(pack(RATINGS))
    ds = load_csv(tmp_path/name)
    assert (ds.n_users, len(ds), ds.name) == (3, 3, 'r')


def test_zip_of_one_csv_reads_and_a_cut_gzip_is_diagnosed(tmp_path):
    with zipfile.ZipFile(tmp_path/'r.zip', 'w', zipfile.ZIP_DEFLATED) as zf: zf.writestr('ratings.txt', RATINGS)
    assert len(load_csv(tmp_path/'r.zip')) == 3
    (tmp_path/'cut.csv.gz').write_bytes(gzip.compress(RATINGS * 200)[:-40])
    assert 'gzip-compressed and cut off' in _error(lambda: load_csv(tmp_path/'cut.csv.gz'))
    (tmp_path/'bad.gz').write_bytes(b'\x1f\x8b' + b'garbage' * 20)
    assert 'gzip-compressed but damaged' in _error(lambda: load_csv(tmp_path/'bad.gz'))


def test_binary_formats_are_named(tmp_path):
    pytest.importorskip('pyarrow')
    pd.read_csv(__import__('io').BytesIO(RATINGS)).to_parquet(tmp_path/'r.csv')
    msg = _error(lambda: load_csv(tmp_path/'r.csv'))
    assert 'is a Parquet file' in msg and 'read_parquet' in msg
    (tmp_path/'r.pkl').write_bytes(__import__('pickle').dumps({'a': 1}, protocol=4))
    assert 'is a pickle file' in _error(lambda: load_csv(tmp_path/'r.pkl'))
    with zipfile.ZipFile(tmp_path/'book.xlsx', 'w') as zf: zf.writestr('xl/workbook.xml', '<x/>'); zf.writestr('[Content_Types].xml', '<x/>')
    assert 'is a Excel (.xlsx) file' in _error(lambda: load_csv(tmp_path/'book.xlsx')) or 'Excel (.xlsx)' in _error(lambda: load_csv(tmp_path/'book.xlsx'))


def test_paths_that_are_not_readable_files(tmp_path, monkeypatch):
    (tmp_path/'a').symlink_to(tmp_path/'b'); (tmp_path/'b').symlink_to(tmp_path/'a')
    assert 'symbolic link loop' in _error(lambda: load_csv(tmp_path/'a'))
    (tmp_path/'gone').symlink_to(tmp_path/'nowhere.csv')
    assert 'which does not exist' in _error(lambda: load_csv(tmp_path/'gone'))
    assert 'is a folder, not a file' in _error(lambda: load_csv(tmp_path))
    assert 'does not exist' in _error(lambda: load_csv(tmp_path/'missing.csv'))
    if hasattr(os, 'mkfifo'):
        os.mkfifo(tmp_path/'pipe')
        assert 'not a regular file' in _error(lambda: load_csv(tmp_path/'pipe'))
    f = tmp_path/'locked.csv'; f.write_bytes(RATINGS); f.chmod(0)
    if os.geteuid() != 0:                                     # root reads anything: simulate the refusal instead
        assert 'permission denied' in _error(lambda: load_csv(f))
    import transferrec.data as data
    def denied(*a, **k): raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(data, 'open', denied, raising=False)
    assert 'cannot be read: permission denied' in _error(lambda: load_csv(f))


# ---------- size: a malformed line near the end of a large file, long texts, long histories


CHILD = r"""
import json, resource, sys
from transferrec.core import DataError
from transferrec.data import load_csv
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # the peak after the imports (robust to pages swapped out)
try: load_csv(sys.argv[1]); msg = None
except DataError as e: msg = str(e)
print(json.dumps({'error': msg, 'growth': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before}))
"""


def test_malformed_line_near_the_end_of_a_large_file(tmp_path):
    import json, subprocess
    rng, k = np.random.default_rng(0), 35_000
    block = pd.DataFrame({'user_id': rng.integers(1, 100_000, k), 'item_id': rng.integers(1, 20_000, k),
                          'rating': rng.integers(1, 6, k), 'timestamp': 881250949 + np.arange(k),
                          'review': 'fine, would watch again; ' * 6}).to_csv(index=False, header=False)
    f = tmp_path/'big.csv'
    with open(f, 'w') as out:
        out.write('user_id,item_id,rating,timestamp,review\n')
        for _ in range(10): out.write(block)                  # about 50 MB
        out.write('5,6,7,8,9,10\n1,2,3,881250949,ok\n')       # a field too many, near the end
    size = f.stat().st_size
    assert size > 45e6
    r = subprocess.run([sys.executable, '-c', CHILD, str(f)], capture_output=True, text=True, timeout=120)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert 'could not be parsed' in res['error'] and f'line {10 * k + 2}' in res['error'], res['error']
    assert res['growth'] < 3 * size, (res['growth'], size)    # read in chunks: no copies of the whole file


def test_non_utf8_byte_near_the_end_is_located_in_chunks(tmp_path):
    f = tmp_path/'latin.csv'
    f.write_bytes(b"user_id,item_id,title\n" + b"1,2,plain\n" * 300_000 + "3,4,Am\xe9lie\n".encode('latin-1'))
    msg = _error(lambda: load_csv(f, encoding='utf-8'))
    assert 'byte 0xe9 on line 300002' in msg


def test_huge_texts_and_long_histories():
    n = 10_000
    items = pd.DataFrame({'item_id': np.arange(n), 'title': ['x' * 100_000] * 3 + ['t'] * (n - 3)})
    texts = item_text(items.head(5), max_chars=512)
    assert [len(t) for t in texts[:3]] == [512] * 3
    inter = pd.DataFrame({'user_id': 1, 'item_id': np.arange(n), 'timestamp': np.arange(n)})   # one user, 10,000 items
    ds = from_dataframes(pd.concat([inter, pd.DataFrame({'user_id': [2, 2, 2], 'item_id': [0, 1, 2], 'timestamp': [0, 1, 2]})]),
                         items)
    sp = split(ds, 'loo')
    hist = sp.histories('test')[ds.user_index([1])[0]]
    assert len(hist) == n - 1 and (np.diff(hist) > 0).all()   # oldest first, all kept
    assert ds.item_index(np.arange(n)).tolist() == list(range(n))


# ---------- archives from elsewhere


def test_zip_bomb_in_place_of_movielens_is_refused(tmp_path):
    bomb = tmp_path/'ml-100k.zip'
    with zipfile.ZipFile(bomb, 'w', zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open('ml-100k/u.data', 'w') as f:
            for _ in range(80): f.write(bytes(2**20))     # 80 MiB of zeros: about 80 KiB compressed
    assert bomb.stat().st_size < 1e6
    msg = _error(lambda: load_movielens('ml-100k', path=bomb))
    assert 'zip bomb' in msg and 'not extracted' in msg
    # the same member given to load_csv (a zip of one file)
    csv_bomb = tmp_path/'r.zip'
    with zipfile.ZipFile(csv_bomb, 'w', zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open('r.csv', 'w') as f:
            f.write(b'user_id,item_id\n')
            for _ in range(80): f.write(b'1,1\n' * 2**18)
    assert 'zip bomb' in _error(lambda: load_csv(csv_bomb))


def test_gzip_bomb_stops_while_streaming(tmp_path):
    g = tmp_path/'r.csv.gz'
    member = gzip.compress((b'1,' + b'a' * 4094 + b'\n') * 256)  # 1 MiB in about 1 KiB; gzip members may follow each other
    g.write_bytes(gzip.compress(b'user_id,item_id\n') + member * 90)   # 90 MiB in about 100 KiB
    assert g.stat().st_size < 1e6
    msg = _error(lambda: load_csv(g))
    assert 'decompression bomb' in msg and 'reading stopped' in msg


# ---------- the API given the wrong things


def test_wrong_types_name_what_was_expected():
    frame = pd.DataFrame({'user_id': [1, 2], 'item_id': [1, 2]})
    ds = from_dataframes(frame)
    cases = [(lambda: split(frame), 'split() expects a Dataset, got a DataFrame'),
             (lambda: split(ds, seed=-1), 'seed must be a whole number'),
             (lambda: split(ds, ratios=('a', 'b', 'c')), 'ratios and time_cuts must be numbers'),
             (lambda: split(ds, ratios=(float('nan'), 0.5, 0.5)), 'finite numbers'),
             (lambda: clean(frame), 'clean() expects a Dataset'),
             (lambda: clean(ds, min_user_interactions='5'), 'must be a whole number'),
             (lambda: load_csv(None), 'must be a file path (a str or Path), got None'),
             (lambda: load_csv(frame), 'pass frames to from_dataframes()'),
             (lambda: load_csv(''), 'path is empty'),
             (lambda: load_csv('x.csv', columns=['a']), 'columns must be a dict'),
             (lambda: from_dataframes('ratings.csv'), 'read files with load_csv()'),
             (lambda: from_dataframes(frame, items=[1, 2]), 'item table must be a pandas DataFrame or None, got a list'),
             (lambda: Dataset(None), 'interactions must be a pandas DataFrame, got None'),
             (lambda: Dataset(frame, items=pd.DataFrame({'id': [1]})), "lacks column(s) ['item_id']"),
             (lambda: item_text(ds), 'item_text() expects the item table as a DataFrame, got a Dataset'),
             (lambda: load_movielens(5), 'dataset name must be a str')]
    for f, expect in cases:
        assert expect in _error(f), expect


def test_text_ids_store_without_pickle(tmp_path):
    "A saved run keeps ids in .npz files read with allow_pickle=False: text ids must not be an object array."
    ds = from_dataframes(pd.DataFrame({'user_id': ['042', '42', '7'], 'item_id': ['007', '7', '007']}))
    np.savez(tmp_path/'ids.npz', users=ds.user_ids, items=ds.item_ids)
    back = np.load(tmp_path/'ids.npz', allow_pickle=False)
    assert back['users'].tolist() == ['042', '42', '7'] and back['items'].tolist() == ['007', '7']
    assert ds.user_index(['042', '42']).tolist() == [0, 1]
