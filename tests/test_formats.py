"""Every format of `transferrec.formats` read from a small fixture written in its exact layout, with the awkward cases
(gzip, missing meta, HTML, lists as text, duplicate reviews, Python-literal meta lines, Parquet, your own column names),
and ml-100k from RecBole's atomic files equal to the MovieLens reader's."""
import gzip, importlib.util, json, warnings
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from transferrec.core import DataError
from transferrec.data import item_text, load_movielens
from transferrec.formats import (FORMATS, detect_format, parse_columns, parse_text_columns, prepare, read_dataset,
                                 join_text, strip_html)

USERS, ITEMS = [f'u{i}' for i in range(8)], [f'p{i}' for i in range(6)]


def shop_rows():
    "Each of 8 customers rates 5 of 6 products, at distinct times (40 rows)."
    return [(u, ITEMS[(k + j) % 6], 1 + (k + j) % 5, 1_600_000_000 + 100 * k + j)
            for k, u in enumerate(USERS) for j in range(5)]


def shop_items():
    return pd.DataFrame({'product': ITEMS, 'title': [f'Mug {i}' for i in range(6)],
                         'category': ["['Kitchen', 'Mugs']"] + ['Kitchen'] * 5,
                         'description': ['<p>A <b>sturdy</b> mug &amp; lid.</p>'] + [f'Plain mug {i}' for i in range(1, 6)]})


@pytest.fixture
def shop(tmp_path):
    pd.DataFrame(shop_rows(), columns=['customer', 'product', 'stars', 'ts']).to_csv(tmp_path/'shop.csv', index=False)
    shop_items().to_csv(tmp_path/'products.csv', index=False)
    return tmp_path


SPEC = 'user_id=customer,item_id=product,rating=stars,timestamp=ts'


def test_parse_columns_and_text_columns():
    assert parse_columns(SPEC) == {'customer': 'user_id', 'product': 'item_id', 'stars': 'rating', 'ts': 'timestamp'}
    assert parse_columns(' user_id = customer , ') == {'customer': 'user_id'}
    for bad, words in (('user_id', "no '='"), ('customer=user_id', 'other way round: user_id=customer'),
                       ('user=customer', 'not a column'), ('user_id=a,user_id=b', 'twice'), ('user_id=a,item_id=a', 'twice')):
        with pytest.raises(DataError, match=words): parse_columns(bad)
    assert parse_text_columns('title, category,description') == ['title', 'category', 'description']
    with pytest.raises(DataError, match='twice'): parse_text_columns('title,title')


def test_text_joining():
    assert strip_html('<p>A <b>sturdy</b> mug &amp; lid.</p>') == 'A sturdy mug & lid.'
    assert join_text(['Mug', ['Kitchen', 'Mugs'], None, 'Done.', np.nan, 'last']) == 'Mug. Kitchen, Mugs. Done. last'
    assert join_text(["['a', ['b', 'c']]", '']) == 'a, b, c'


def test_csv_with_your_own_column_names(shop):
    ds = read_dataset(shop/'shop.csv', items=shop/'products.csv', columns=SPEC, text='title,category,description')
    assert (ds.n_users, ds.n_items, len(ds)) == (8, 6, 40) and ds.name == 'shop'
    rows = ds.interactions.sort_values(['user_id', 'timestamp'])[['user_id', 'item_id', 'rating', 'timestamp']]
    assert list(rows.itertuples(index=False, name=None)) == sorted(shop_rows(), key=lambda r: (r[0], r[3]))
    assert item_text(ds.items)[0] == 'Mug 0. Kitchen, Mugs. A sturdy mug & lid.'
    assert item_text(ds.items)[1] == 'Mug 1. Kitchen. Plain mug 1'


def test_a_missing_column_suggests_the_flag(shop):
    with pytest.raises(DataError) as e: read_dataset(shop/'shop.csv', items=shop/'products.csv')
    assert '--columns user_id=customer,item_id=product,rating=stars,timestamp=ts' in str(e.value)
    assert 'customer, product, stars, ts' in str(e.value)
    with pytest.raises(DataError) as e:   # a mistyped name is named, and the right one suggested
        read_dataset(shop/'shop.csv', columns='user_id=custmer,item_id=product')
    assert "'custmer' named in the columns spec is not one of them" in str(e.value)
    assert '--columns user_id=customer,item_id=product,rating=stars,timestamp=ts' in str(e.value)
    with pytest.raises(DataError, match='--text'):
        read_dataset(shop/'shop.csv', items=shop/'products.csv', columns=SPEC, text='title,colour')


def test_parquet_and_mixed_tables(shop):
    inter = pd.read_csv(shop/'shop.csv')
    inter['customer'] = inter['customer'].astype(str)
    inter.to_parquet(shop/'shop.parquet')
    items = shop_items().assign(category=[['Kitchen', 'Mugs']] + [['Kitchen']] * 5)  # a real list column
    items.to_parquet(shop/'products.parquet')
    assert detect_format(shop/'shop.parquet') == 'parquet'
    for inter_file, item_file in (('shop.parquet', 'products.parquet'), ('shop.parquet', 'products.csv'),
                                  ('shop.csv', 'products.parquet')):
        ds = read_dataset(shop/inter_file, items=shop/item_file, columns=SPEC, text=['title', 'category', 'description'])
        assert (ds.n_users, ds.n_items, len(ds)) == (8, 6, 40), (inter_file, item_file)
        assert ds.items['text'][0] == 'Mug 0. Kitchen, Mugs. A sturdy mug & lid.'
    with pytest.raises(DataError, match='--columns user_id=customer'): read_dataset(shop/'shop.parquet')


def write_lines(path, records, literal=False):
    text = '\n'.join(repr(r) if literal else json.dumps(r) for r in records) + '\n'
    if str(path).endswith('.gz'):
        with gzip.open(path, 'wt', encoding='utf-8') as f: f.write(text)
    else: Path(path).write_text(text, encoding='utf-8')
    return path


def amazon2023_reviews():
    "36 reviews, one repeated exactly (a duplicate), timestamps in milliseconds."
    rows = [{'rating': float(1 + (k + j) % 5), 'title': 'ok', 'text': 'fine <br />really', 'images': [],
             'asin': f'V{j}', 'parent_asin': f'B0{j}', 'user_id': f'AG{k}', 'timestamp': (1_650_000_000 + 60 * k + j) * 1000,
             'helpful_vote': 0, 'verified_purchase': True} for k in range(7) for j in range(5)]
    return rows + [rows[3]]


def amazon2023_meta():
    "Meta of items B00..B03 (B04 has none): HTML, lists, an empty description."
    return [{'main_category': 'All Beauty', 'title': f'Soap {j}', 'average_rating': 4.1, 'rating_number': 9,
             'features': ['Vegan', 'Lavender'] if j == 0 else [], 'description': ['<b>Gentle</b> on skin &amp; hair'] if j == 0 else [],
             'price': None, 'images': [], 'videos': [], 'store': 'Acme', 'categories': ['Beauty', 'Soap'] if j < 2 else [],
             'details': {'Brand': 'Acme'}, 'parent_asin': f'B0{j}'} for j in range(4)] + \
           [{'title': 'Unreviewed', 'parent_asin': 'B99', 'features': [], 'description': [], 'categories': [], 'store': None}]


def test_amazon2023_gzip_duplicates_and_missing_meta(tmp_path):
    rev = write_lines(tmp_path/'All_Beauty.jsonl.gz', amazon2023_reviews())
    meta = write_lines(tmp_path/'meta_All_Beauty.jsonl', amazon2023_meta())
    assert detect_format(rev) == 'amazon2023'
    with pytest.warns(UserWarning) as w: ds = read_dataset(rev, items=meta)
    msgs = ' '.join(str(x.message) for x in w)
    assert 'removed 1 duplicate review' in msgs and '1 interacted item ids have no row' in msgs
    assert (ds.n_users, ds.n_items, len(ds), ds.name) == (7, 5, 35, 'All_Beauty')   # B99 was never reviewed: not kept
    assert ds.interactions['timestamp'].min() == 1_650_000_000                       # milliseconds -> seconds
    text = dict(zip(ds.items['item_id'], item_text(ds.items)))
    assert text['B00'] == 'Soap 0. Acme. Beauty, Soap. Vegan, Lavender. Gentle on skin & hair'
    assert text['B02'] == 'Soap 2. Acme' and text['B04'].startswith('item B04')
    with pytest.raises(DataError, match='metadata'): detect_format(meta)
    with pytest.raises(DataError, match="format='amazon2023'"): read_dataset(rev, format='amazon2018')


def test_amazon_meta_listing_an_item_twice_keeps_the_first(tmp_path):
    "The releases list some items twice (re-crawled pages): the first listing is kept, with a warning."
    rev = write_lines(tmp_path/'r.jsonl', amazon2023_reviews())
    meta = amazon2023_meta()
    meta = write_lines(tmp_path/'m.jsonl', meta + [dict(meta[1], title='Soap 1, crawled again')])
    with pytest.warns(UserWarning, match=r"1 repeated item\(s\).*kept the first"): ds = read_dataset(rev, items=meta)
    assert ds.n_items == 5 and dict(zip(ds.items['item_id'], ds.items['title']))['B01'] == 'Soap 1'


def test_amazon2018_plain_reviews_and_python_literal_meta(tmp_path):
    rows = [{'overall': float(1 + (k * j) % 5), 'verified': True, 'reviewTime': '09 13, 2009', 'reviewerID': f'A{k}',
             'asin': f'00{j}', 'reviewerName': 'x', 'reviewText': 'good', 'summary': 's', 'unixReviewTime': 1_252_800_000 + k * 9 + j}
            for k in range(6) for j in range(6)]
    rev = write_lines(tmp_path/'Books_5.json', rows + rows[:2])
    meta = write_lines(tmp_path/'meta_Books.json.gz', [
        {'asin': f'00{j}', 'title': f'Book {j}', 'brand': 'Pub' if j % 2 else '', 'category': ['Books', 'Fiction &amp; Poetry'],
         'description': ['<div>Long <i>story</i></div>'] if j == 1 else []} for j in range(6)], literal=True)
    assert detect_format(rev) == 'amazon2018'
    with pytest.warns(UserWarning, match='removed 2 duplicate reviews'): ds = read_dataset(rev, items=meta)
    assert (ds.n_users, ds.n_items, len(ds)) == (6, 6, 36)
    assert ds.items['item_id'].tolist() == [f'00{j}' for j in range(6)]   # '001' keeps its zeros
    assert item_text(ds.items)[1] == 'Book 1. Pub. Books, Fiction & Poetry. Long story'
    assert ds.interactions['rating'].between(1, 5).all()


def test_damaged_lines_and_literal_eval_runs_no_code(tmp_path):
    marker = tmp_path/'ran'
    bad = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    rows = [{'reviewerID': 'A1', 'asin': 'x1', 'overall': 5.0, 'unixReviewTime': 1_300_000_000},
            {'reviewerID': 'A2', 'asin': 'x1', 'overall': 4.0, 'unixReviewTime': 1_300_000_001}]
    rev = tmp_path/'r.json'
    rev.write_text('\n'.join(map(json.dumps, rows)) + '\n' + bad + '\n{"reviewerID": "A3", "as')  # a cut-off last line
    with pytest.raises(DataError, match='line 3'): read_dataset(rev)
    with pytest.warns(UserWarning, match='skipped 2 line'): ds = read_dataset(rev, dropna=True)
    assert len(ds) == 2 and not marker.exists()


def test_recbole_folder_with_token_seq_text(tmp_path):
    (tmp_path/'shop.inter').write_text('user_id:token\titem_id:token\trating:float\ttimestamp:float\n' +
                                       ''.join(f'{u}\t{i}\t{r}\t{t}\n' for u, i, r, t in shop_rows()))
    (tmp_path/'shop.item').write_text('item_id:token\ttitle:token_seq\tbrand:token\tcategories:token_seq\tprice:float\n' +
                                      ''.join(f'p{i}\tBig mug {i}\tAcme\tKitchen Mugs\t{i}.5\n' for i in range(5)))
    assert detect_format(tmp_path) == 'recbole' and detect_format(tmp_path/'shop.inter') == 'recbole'
    with pytest.warns(UserWarning, match='1 interacted item ids have no row'): ds = read_dataset(tmp_path)
    assert (ds.n_users, ds.n_items, len(ds), ds.name) == (8, 6, 40, 'shop')
    assert item_text(ds.items)[:2] == ['Big mug 0. Acme. Kitchen Mugs', 'Big mug 1. Acme. Kitchen Mugs']
    with pytest.warns(UserWarning, match='no row'): ds = read_dataset(tmp_path/'shop.inter', text='brand,title')
    assert item_text(ds.items)[0] == 'Acme. Big mug 0'


def test_recbole_presplit_benchmark_parts(tmp_path):
    "A benchmark folder with NAME.train/valid/test.inter (no NAME.inter) reads as one dataset of all three parts."
    rows = shop_rows()
    head = 'user_id:token\titem_id:token\trating:float\ttimestamp:float\n'
    for part, chunk in (('train', rows[:30]), ('valid', rows[30:35]), ('test', rows[35:])):
        (tmp_path/f'amazon.books.{part}.inter').write_text(head + ''.join(f'{u}\t{i}\t{r}\t{t}\n' for u, i, r, t in chunk))
    ds = read_dataset(tmp_path)
    assert (len(ds), ds.name) == (40, 'amazon.books')
    assert read_dataset(tmp_path/'amazon.books.valid.inter').name == 'amazon.books'
    (tmp_path/'other.inter').write_text(head + 'a\tb\t1\t1\n')
    with pytest.raises(DataError, match='holds 2 RecBole datasets'): read_dataset(tmp_path)
    assert len(read_dataset(tmp_path, name='other')) == 1


def test_recbole_ml100k_equals_the_movielens_reader():
    spec = importlib.util.find_spec('recbole')   # installed without dependencies for the files its wheel ships
    if spec is None: pytest.skip('recbole is not installed (make install adds it)')
    folder = Path(list(spec.submodule_search_locations)[0])/'dataset_example'/'ml-100k'
    rb, ml = read_dataset(folder), load_movielens('ml-100k')
    assert (rb.n_users, rb.n_items, len(rb)) == (943, 1682, 100_000)
    pd.testing.assert_frame_equal(rb.interactions, ml.interactions)   # ids, ratings, timestamps and index maps
    assert (rb.item_ids == ml.item_ids).all() and (rb.user_ids == ml.user_ids).all()
    assert item_text(rb.items) == item_text(ml.items)


def test_detect_format_refuses_what_it_cannot_tell(tmp_path):
    (tmp_path/'empty.csv').write_text('')
    (tmp_path/'other.jsonl').write_text('{"who": 1, "what": 2}\n')
    (tmp_path/'folder').mkdir()
    for p, words in (('empty.csv', 'empty'), ('other.jsonl', 'not a format'), ('folder', 'without a RecBole'),
                     ('nothing.csv', 'does not exist')):
        with pytest.raises(DataError, match=words): detect_format(tmp_path/p)
    with pytest.raises(DataError, match='unknown format'): read_dataset(tmp_path/'other.jsonl', format='json')
    assert set(FORMATS) == {'csv', 'parquet', 'recbole', 'amazon2023', 'amazon2018'}


def test_prepare_named_steps(shop):
    ds = read_dataset(shop/'shop.csv', items=shop/'products.csv', columns=SPEC, text='title,description')
    ds.items.loc[ds.items['item_id'] == 'p5', 'text'] = ''
    doubled = pd.concat([ds.interactions.iloc[:3], ds.interactions]).drop(columns=['user_idx', 'item_idx'])
    from transferrec.data import Dataset
    ds2 = Dataset(doubled.reset_index(drop=True), ds.items.drop(columns='item_idx'), name='shop')
    with pytest.warns(UserWarning) as w: out = prepare(ds2, kcore=0, drop_textless=True)
    msgs = ' '.join(str(x.message) for x in w)
    assert 'removed 3 duplicate reviews' in msgs and 'dropped 1 item without text' in msgs
    assert 'p5' not in set(out.item_ids) and len(out) == 40 - (ds.interactions['item_id'] == 'p5').sum()
    implicit = prepare(ds, kcore=0, implicit=4)
    assert implicit.interactions['rating'].min() >= 4 and len(implicit) == (ds.interactions['rating'] >= 4).sum()
    core = prepare(ds, kcore=4, implicit=2)
    counts_u, counts_i = core.interactions.groupby('user_id').size(), core.interactions.groupby('item_id').size()
    assert counts_u.min() >= 4 and counts_i.min() >= 4 and core.interactions['rating'].min() >= 2
    sparse = pd.DataFrame({'user_id': ['new', 'new'], 'item_id': ['p0', 'p1'], 'rating': [5, 5], 'timestamp': [1, 2]})
    ds3 = Dataset(pd.concat([ds.interactions.drop(columns=['user_idx', 'item_idx']), sparse], ignore_index=True),
                  ds.items.drop(columns='item_idx'), name='shop')
    assert 'new' in set(ds3.user_ids) and 'new' not in set(prepare(ds3, kcore=3).user_ids)
    assert len(prepare(ds3, kcore=3)) == len(ds)


def test_every_format_through_the_command_line(tmp_path, capsys):
    "`transferrec data --format ...` reads each layout (and auto-detects it) as the API does."
    from transferrec.cli import main
    rec = tmp_path/'recbole'; rec.mkdir()
    (rec/'shop.inter').write_text('user_id:token\titem_id:token\trating:float\ttimestamp:float\n' +
                                  ''.join(f'{u}\t{i}\t{r}\t{t}\n' for u, i, r, t in shop_rows()))
    rev2023 = write_lines(tmp_path/'All_Beauty.jsonl.gz', amazon2023_reviews())
    meta2023 = write_lines(tmp_path/'meta_All_Beauty.jsonl', amazon2023_meta())
    parquet = tmp_path/'orders.parquet'
    pd.DataFrame(shop_rows(), columns=['customer', 'product', 'stars', 'ts']).to_parquet(parquet)
    cases = [(['--dataset', rec, '--format', 'recbole'], read_dataset(rec)),
             (['--dataset', rec], read_dataset(rec)),
             (['--dataset', rev2023, '--items', meta2023, '--format', 'amazon2023'], read_dataset(rev2023, items=meta2023)),
             (['--dataset', parquet, '--columns', 'user_id=customer,item_id=product,rating=stars,timestamp=ts'],
              read_dataset(parquet, columns='user_id=customer,item_id=product,rating=stars,timestamp=ts'))]
    for args, ds in cases:
        with warnings.catch_warnings():   # the readers' warnings (duplicates removed, items without meta) are tested above
            warnings.simplefilter('ignore')
            code = main(['data', *map(str, args), '--json', str(tmp_path/'stats.json')])
        out, err = capsys.readouterr()
        assert code == 0, err
        stats = json.loads((tmp_path/'stats.json').read_text())
        assert (stats['users'], stats['items'], stats['interactions']) == (ds.n_users, ds.n_items, len(ds)), (args, stats)
