"The `transferrec` command as a user runs it: real subprocesses of the installed entry point."
import json, subprocess, sys
from pathlib import Path
import pytest

EXE = str(Path(sys.executable).parent/'transferrec')

def run(*args, timeout=600):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)

def test_help_shows_examples():
    r = run('--help')
    assert r.returncode == 0 and 'benchmark' in r.stdout and 'data' in r.stdout
    for cmd in ('data', 'benchmark'):
        h = run(cmd, '--help')
        assert h.returncode == 0 and f'example: transferrec {cmd}' in h.stdout

def test_data_reports_ml100k(tmp_path):
    r = run('data', '--dataset', 'ml-100k', '--json', str(tmp_path/'s.json'))
    assert r.returncode == 0, r.stderr
    lines = dict(l.split(None, 1) for l in r.stdout.splitlines() if l.strip())
    assert (lines['users'], lines['items'], lines['interactions']) == ('943', '1682', '100000')
    assert json.loads((tmp_path/'s.json').read_text())['interactions'] == 100000

@pytest.mark.parametrize('args,fragment', [
    (['data', '--dataset', 'ml-5k'], 'unknown dataset'),
    (['data', '--dataset', 'missing.csv'], 'does not exist'),
    (['benchmark', '--models', 'pop,magic'], "unknown model 'magic'"),
])
def test_bad_input_exit_2_one_line(args, fragment):
    r = run(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert fragment in r.stderr and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

def test_bad_csv_columns(tmp_path):
    (tmp_path/'bad.csv').write_text('a,b\n1,2\n')
    r = run('data', '--dataset', str(tmp_path/'bad.csv'))
    assert r.returncode == 2 and "columns={'your_name': 'user_id'" in r.stderr

def test_unknown_protocol_is_argparse_error():
    r = run('benchmark', '--protocol', 'weekly')
    assert r.returncode == 2 and "invalid choice: 'weekly'" in r.stderr

def test_verbose_shows_traceback():
    r = run('--verbose', 'data', '--dataset', 'ml-5k')
    assert r.returncode == 2 and 'Traceback' in r.stderr

def test_benchmark_json(tmp_path):
    out = tmp_path/'b.json'
    r = run('benchmark', '--dataset', 'ml-100k', '--protocol', 'random', '--models', 'pop,ease', '--json', str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res['dataset'] == 'ml-100k' and res['protocol'] == 'random' and res['k'] == 10
    keys = {'ndcg@10', 'recall@10', 'mrr@10', 'hit@10', 'precision@10', 'fit_seconds', 'eval_seconds'}
    assert keys <= set(res['results']['ease']) and res['results']['ease']['ndcg@10'] > res['results']['pop']['ndcg@10']
    assert 'ease' in r.stdout and 'pop' in r.stdout

def test_cleaning_that_empties_the_dataset_exit_2():
    r = run('data', '--dataset', 'ml-100k', '--min-user', '5000')
    assert r.returncode == 2 and 'lower the thresholds' in r.stderr and 'Traceback' not in r.stderr

def test_nan_ids_exit_2(tmp_path):
    (tmp_path/'nan.csv').write_text('user_id,item_id\n1,2\n,3\n')
    r = run('data', '--dataset', str(tmp_path/'nan.csv'))
    assert r.returncode == 2 and 'missing user_id' in r.stderr

def test_benchmark_transfer_model_on_own_csv(tmp_path):
    from transferrec.data import synthetic
    ds = synthetic(n_users=60, n_items=50, interactions_per_user=12, seed=4)
    ds.interactions[['user_id', 'item_id', 'rating', 'timestamp']].to_csv(tmp_path/'inter.csv', index=False)
    ds.items[['item_id', 'title', 'genres']].to_csv(tmp_path/'items.csv', index=False)
    out = tmp_path/'b.json'
    r = run('benchmark', '--dataset', str(tmp_path/'inter.csv'), '--items', str(tmp_path/'items.csv'), '--protocol', 'loo',
            '--models', 'pop,sequential-id', '--json', str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())['results']
    assert set(res) == {'pop', 'sequential-id'} and 0 <= res['sequential-id']['ndcg@10'] <= 1
