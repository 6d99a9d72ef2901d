"""Bad option values and paths through `transferrec.cli.main`, in-process: each is one line `transferrec CMD: error: ...`
naming the problem and the fix, exit status 2, no traceback, nothing written; your own column names and text columns
from the command line; SIGTERM and Ctrl-C; the value checks as the Python side uses them."""
import json, os, shlex, signal, shutil
from pathlib import Path
import pandas as pd, pytest
import transferrec.benchmark, transferrec.cli
from transferrec.cli import main, check_output, strategy_options
from transferrec.core import DataError, StopRequested, check_value, check_options, OPTION_RULES
from transferrec.data import synthetic

TINY = ['--epochs', '1', '--option', 'dim=8', '--option', 'max_len=5', '--option', 'progress=false']


def cli(capsys, *args):
    "Run the command in-process: exit status, stdout, stderr."
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, args, *fragments):
    "The command exits 2 with one error line holding every fragment; that line."
    code, out, err = cli(capsys, *args)
    assert code == 2, (out, err)
    assert err.startswith(f'transferrec {args[0]}: error: ') and len(err.strip().splitlines()) == 1, err
    assert 'Traceback' not in err
    for f in fragments: assert f in err, (f, err)
    return err


@pytest.fixture(scope='module')
def shop(tmp_path_factory):
    "A shop's own files: interactions with columns customer,product,stars,ts and products with title,category,description."
    d = tmp_path_factory.mktemp('shop')
    ds = synthetic(n_users=60, n_items=40, interactions_per_user=10, seed=3)
    inter = ds.interactions.rename(columns={'user_id': 'customer', 'item_id': 'product', 'rating': 'stars', 'timestamp': 'ts'})
    inter[['customer', 'product', 'stars', 'ts']].to_csv(d/'orders.csv', index=False)
    items = ds.items.rename(columns={'item_id': 'product'}).assign(category=lambda t: t.genres.str.split('|').str[0],
                                                                    description=lambda t: 'A film from ' + t.year.astype(str))
    items[['product', 'title', 'category', 'description']].to_csv(d/'products.csv', index=False)
    return d


@pytest.fixture(scope='module')
def run(shop, tmp_path_factory):
    "A run trained from the shop's files with --columns and --text (the text model: the item texts matter)."
    out = tmp_path_factory.mktemp('runs')/'shop'
    code = main(['train', '--dataset', str(shop/'orders.csv'), '--items', str(shop/'products.csv'),
                 '--columns', 'user_id=customer,item_id=product,rating=stars,timestamp=ts', '--text', 'title,category,description',
                 *TINY, '--out', str(out)])
    assert code == 0
    return out


# ------------------------------------------------------------------------------------------ option values
VALUES = {  # the arguments after `train --dataset synthetic --out X` -> fragments of the message
    'epochs 0': (['--epochs', '0'], ['epochs must be a positive integer, got 0', '--epochs 5']),
    'epochs -5': (['--epochs', '-5'], ['epochs must be a positive integer, got -5']),
    'epochs 0.5': (['--epochs', '0.5'], ['epochs must be a positive integer, got 0.5']),
    'epochs nan': (['--epochs', 'nan'], ['epochs must be a positive integer, got nan']),
    'two-tower epochs 0': (['--strategy', 'two-tower', '--epochs', '0'], ['num_train_epochs must be a positive number, got 0']),
    'seed -1': (['--seed', '-1'], ['seed must be an integer from 0 to 4294967295, got -1', '--seed 0']),
    'seed too large': (['--seed', '99999999999999999999'], ['seed must be an integer from 0 to 4294967295']),
    'dim abc': (['--option', 'dim=abc'], ["dim must be a positive integer, got 'abc'", '--option dim=64']),
    'dim 0': (['--option', 'dim=0'], ['dim must be a positive integer, got 0']),
    'lr nan': (['--option', 'lr=nan'], ["lr must be a positive number, got 'nan'", '--option lr=0.001']),
    'lr NaN': (['--option', 'lr=NaN'], ['lr must be a positive number, got nan']),
    'lr -1 (gradient ascent)': (['--option', 'lr=-1'], ['lr must be a positive number, got -1']),
    'dropout 1.5': (['--option', 'dropout=1.5'], ['dropout must be a rate from 0 up to (not including) 1, got 1.5']),
    'max_len 0': (['--option', 'max_len=0'], ['max_len must be a positive integer, got 0']),
    'batch_size true': (['--option', 'batch_size=true'], ['batch_size must be a positive integer, got True']),
    'no KEY=VALUE': (['--option', 'dim'], ['--option takes KEY=VALUE']),
    'seed abc (argparse)': (['--seed', 'abc'], ["invalid int value: 'abc'", 'see `transferrec train --help`']),
}


@pytest.mark.parametrize('case', VALUES)
def test_bad_values_refused_before_training(tmp_path, capsys, case):
    args, fragments = VALUES[case]
    refused(capsys, ['train', '--dataset', 'synthetic', '--out', tmp_path/'run', *args], *fragments)
    assert not (tmp_path/'run').exists()


@pytest.mark.parametrize('args,fragments', [
    (['--sep', ''], ['--sep is empty', "--sep ';'"]),
    (['--implicit', 'nan'], ['implicit must be a finite number, got nan', '--implicit 4']),
    (['--min-user', '-3'], ['min_user must be an integer >= 0, got -3']),
    (['--format', 'excel'], ["invalid choice: 'excel'"]),
])
def test_bad_dataset_options(capsys, args, fragments):
    refused(capsys, ['data', '--dataset', 'synthetic', *args], *fragments)


def test_bad_evaluate_serve_values(run, capsys):
    refused(capsys, ['evaluate', '--run', run, '--k', '0'], 'k must be a positive integer, got 0')
    refused(capsys, ['serve', '--run', run, '--port', '70000'], 'port must be a port number from 0 to 65535')
    refused(capsys, ['serve', '--run', run, '--workers', '0'], 'workers must be a positive integer')


def test_the_checks_as_the_api_uses_them():
    "The same rules, with the fix written as a Python keyword; valid values pass through unchanged."
    with pytest.raises(DataError, match=r"lr must be a positive number, got -1; e.g. lr=0.001"): check_value('lr', -1)
    with pytest.raises(DataError, match=r"patience must be an integer >= 0 or None, got -1"): check_value('patience', -1)
    with pytest.raises(DataError, match='dim must be'): check_options({'retriever': {'strategy': 'two-tower', 'dim': 0}})
    ok = {'dim': 64, 'lr': 1e-3, 'dropout': 0.0, 'patience': None, 'model': 'any/name', 'item_repr': 'text'}
    assert check_options(dict(ok)) == ok
    assert strategy_options('sequential', epochs=3.0) == {'epochs': 3, 'seed': 0}   # whole epochs pass as integers
    assert all(check_value(name, example) == example for name, (kind, example, _) in OPTION_RULES.items())


# ------------------------------------------------------------------------------------------ paths
def test_out_that_is_a_file(tmp_path, capsys):
    (tmp_path/'run').write_text('not a folder')
    refused(capsys, ['train', '--dataset', 'synthetic', '--out', tmp_path/'run'], "--out", 'is a file', 'path of a folder')
    assert (tmp_path/'run').read_text() == 'not a folder'


def test_out_in_a_read_only_folder_refused_before_training(tmp_path, capsys, monkeypatch):
    "Checked before the data is read or a model is built (root ignores permission bits, so `os.access` plays the read-only folder)."
    ro = tmp_path/'ro'; ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, 'access', lambda p, mode, **kw: False if Path(p) == ro and mode & os.W_OK else real(p, mode, **kw))
    monkeypatch.setattr(transferrec.cli, 'train_run', lambda *a, **k: pytest.fail('training started'))
    refused(capsys, ['train', '--dataset', 'synthetic', '--out', ro/'run'], 'cannot be written', 'is read-only')
    refused(capsys, ['data', '--dataset', 'synthetic', '--json', ro/'new'/'stats.json'], 'is read-only')


def test_json_that_is_a_folder(tmp_path, capsys):
    refused(capsys, ['data', '--dataset', 'synthetic', '--json', tmp_path], 'is a folder', 'out.json')


def test_outputs_never_overwrite_inputs(shop, run, tmp_path, capsys):
    csv = tmp_path/'my.csv'; shutil.copy(shop/'orders.csv', csv); before = csv.read_bytes()
    refused(capsys, ['data', '--dataset', csv, '--columns', 'user_id=customer,item_id=product', '--json', csv],
            'is the input', 'destroy what this command reads')
    assert csv.read_bytes() == before
    refused(capsys, ['data', '--dataset', csv, '--items', shop/'products.csv', '--json', shop/'products.csv'], 'is the input')
    config = (run/'config.json').read_bytes()
    refused(capsys, ['evaluate', '--run', run, '--json', run/'config.json'], 'is inside the input')
    assert (run/'config.json').read_bytes() == config
    refused(capsys, ['train', '--dataset', csv, '--out', csv], 'is a file')


def test_unreadable_file(tmp_path, capsys, monkeypatch):
    p = tmp_path/'secret.csv'; p.write_text('user_id,item_id\n1,2\n')
    real = os.access
    monkeypatch.setattr(os, 'access', lambda q, mode, **kw: False if Path(q) == p and mode & os.R_OK else real(q, mode, **kw))
    refused(capsys, ['data', '--dataset', p], 'cannot be read (permission denied)', 'chmod')


def test_permission_error_from_a_reader_is_one_line(tmp_path, capsys, monkeypatch):
    def denied(*a, **k): raise PermissionError(13, 'Permission denied', str(tmp_path/'x.csv'))
    monkeypatch.setattr(transferrec.cli, 'load_dataset', denied)
    refused(capsys, ['data', '--dataset', 'synthetic'], 'Permission denied', 'check the path and its permissions')


# ------------------------------------------------------------------------------------------ runs
@pytest.mark.parametrize('edit,fragment', [
    (lambda m: m['config'].update(dim='abc'), "dim must be a positive integer, got 'abc'"),
    (lambda m: m['config'].update(lr=-1), 'lr must be a positive number'),
    (lambda m: m.update(files='all of them'), "'files' is str"),
    (lambda m: m.update(strategy=5), "'strategy' is int"),
    (lambda m: m['data']['source'].update(implicit='high'), "implicit must be a finite number"),
])
def test_hand_edited_config(run, tmp_path, capsys, edit, fragment):
    bad = tmp_path/'run'; shutil.copytree(run, bad)
    meta = json.loads((bad/'config.json').read_text()); edit(meta)
    (bad/'config.json').write_text(json.dumps(meta))
    for cmd in (['evaluate', '--run', bad], ['recommend', '--run', bad, '--text', 'a film']):
        refused(capsys, cmd, 'is not as a run writes it', fragment, 'restore it from a backup, or retrain')


def test_k_capped_at_the_catalogue(run, capsys, tmp_path):
    code, out, err = cli(capsys, 'evaluate', '--run', run, '--k', '1000000000', '--json', tmp_path/'m.json')
    assert code == 0, err
    n = json.loads((run/'config.json').read_text())['n_items']
    assert f'note: --k 1000000000 is more than the {n:,} items of the catalogue; using --k {n}' in err
    assert f'ndcg@{n}' in json.loads((tmp_path/'m.json').read_text())
    code, out, err = cli(capsys, 'recommend', '--run', run, '--text', 'a film', '--k', '1000000000', '--json', tmp_path/'r.json')
    assert code == 0 and len(json.loads((tmp_path/'r.json').read_text())) <= n
    code, out, err = cli(capsys, 'benchmark', '--dataset', 'synthetic', '--models', 'pop', '--k', '1000000000', '--json', tmp_path/'b.json')
    assert code == 0 and 'using --k 300' in err and json.loads((tmp_path/'b.json').read_text())['k'] == 300


def test_out_of_memory_is_one_line(capsys, monkeypatch):
    def oom(*a, **k): raise MemoryError()
    monkeypatch.setattr(transferrec.benchmark, 'benchmark', oom)
    code, out, err = cli(capsys, 'benchmark', '--dataset', 'synthetic', '--models', 'pop')
    assert code == 1 and 'Traceback' not in err and len(err.strip().splitlines()) == 1
    assert err.startswith('transferrec benchmark: error: out of memory') and 'smaller dataset' in err


# ------------------------------------------------------------------------------------------ your own columns
def test_own_columns_and_text_train_evaluate_recommend(shop, run, capsys, tmp_path):
    "The shop's files through train (fixture), evaluate (the same data rebuilt from the recorded options) and recommend."
    source = json.loads((run/'config.json').read_text())['data']['source']
    assert source['columns'] == 'user_id=customer,item_id=product,rating=stars,timestamp=ts'
    assert source['text'] == 'title,category,description' and source['format'] == 'auto'
    items = pd.read_json(run/'items.json', orient='records')
    first = pd.read_csv(shop/'products.csv').iloc[0]
    text = items.set_index('item_id').loc[first['product'], 'text']
    assert first['title'] in text and first['category'] in text and first['description'] in text
    trained = json.loads((run/'metrics.json').read_text())['metrics']
    code, out, err = cli(capsys, 'evaluate', '--run', run, '--json', tmp_path/'m.json')
    assert code == 0, err
    assert json.loads((tmp_path/'m.json').read_text()) == trained
    code, out, err = cli(capsys, 'recommend', '--run', run, '--user', str(pd.read_csv(shop/'orders.csv').customer[0]), '--k', '3')
    assert code == 0 and len(out.strip().splitlines()) == 4, (out, err)


def test_parquet_with_own_columns(shop, capsys, tmp_path):
    pd.read_csv(shop/'orders.csv').to_parquet(tmp_path/'orders.parquet')
    code, out, err = cli(capsys, 'data', '--dataset', tmp_path/'orders.parquet', '--columns', 'user_id=customer,item_id=product,rating=stars,timestamp=ts')
    assert code == 0, err
    assert dict(l.split(None, 1) for l in out.splitlines())['interactions'] == str(len(pd.read_csv(shop/'orders.csv')))


def test_missing_column_suggests_the_flag(shop, capsys):
    refused(capsys, ['data', '--dataset', shop/'orders.csv'], '--columns', 'customer')


# ------------------------------------------------------------------------------------------ interruptions
def test_sigterm_during_train_exit_143_with_the_resume_command(tmp_path, capsys, monkeypatch):
    "A SIGTERM while training: status 143, no traceback, the exact command that resumes (the checkpoint exists)."
    out = tmp_path/'my run'
    def train(ds, out_, *a, **k):
        Path(out_).mkdir(parents=True); (Path(out_)/'checkpoint.pt').write_bytes(b'')
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail('SIGTERM did not stop the command')
    monkeypatch.setattr(transferrec.cli, 'train_run', train)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = cli(capsys, 'train', '--dataset', 'synthetic', '--epochs', '4', '--option', 'dim=8', '--out', out)
    assert code == 143 and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith('transferrec train: interrupted by SIGTERM; resume with: ')
    command = shlex.split(err.split('resume with: ')[1])
    assert command == ['transferrec', 'train', '--dataset', 'synthetic', '--out', str(out), '--epochs', '4.0', '--option', 'dim=8', '--resume']
    assert signal.getsignal(signal.SIGTERM) is before                     # the handler is put back


def test_stop_from_training_and_ctrl_c(tmp_path, capsys, monkeypatch):
    "Training's own `StopRequested` carries the signal and the status; a bare Ctrl-C is SIGINT, 130."
    def stopped(*a, **k): raise StopRequested(signal.SIGTERM, ' after epoch 2')
    monkeypatch.setattr(transferrec.cli, 'train_run', stopped)
    code, _, err = cli(capsys, 'train', '--dataset', 'synthetic', '--out', tmp_path/'run')
    assert code == 143 and 'nothing was saved yet' in err
    def ctrl_c(*a, **k): raise KeyboardInterrupt()
    monkeypatch.setattr(transferrec.cli, 'load_dataset', ctrl_c)
    code, _, err = cli(capsys, 'data', '--dataset', 'synthetic')
    assert code == 130 and err.strip() == 'transferrec data: interrupted by SIGINT'


def test_second_train_into_a_folder_in_use(tmp_path, capsys):
    "Another process writing the same --out: one line naming its PID, before any training; nothing of its folder touched."
    import subprocess, sys
    out = tmp_path/'run'
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time\nfrom transferrec.core import folder_lock\n'
                               f'with folder_lock({str(out)!r}):\n    print("held", flush=True); time.sleep(60)'],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        refused(capsys, ['train', '--dataset', 'synthetic', *TINY, '--out', out], f'is in use by PID {holder.pid}', 'choose another --out')
        assert not out.exists()
    finally: holder.kill(); holder.wait()


def test_real_sigterm_while_training(tmp_path, capsys):
    "A real SIGTERM in the middle of training: training stops at a step boundary, keeps its checkpoint, and the command says how to resume."
    import threading, time
    out = tmp_path/'run'
    def kill_when_checkpointed():
        for _ in range(600):
            if (out/'checkpoint.pt').exists(): break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=kill_when_checkpointed, daemon=True).start()
    code, _, err = cli(capsys, 'train', '--dataset', 'synthetic', '--item-repr', 'id', '--epochs', '500', '--option', 'patience=0',
                       '--option', 'dim=8', '--option', 'max_len=5', '--option', 'progress=false', '--out', out)
    assert code == 143 and 'Traceback' not in err, err
    assert err.strip().endswith('--resume') and 'resume with: transferrec train' in err, err
    assert (out/'checkpoint.pt').exists() and not (out/'config.json').exists()


def test_multitask_trains_and_recommends_from_the_command_line(tmp_path, capsys):
    "`train --strategy multitask` writes a run whose metrics carry the rating head's RMSE, and `recommend` reads it."
    out = tmp_path/'mt'
    code, _, err = cli(capsys, 'train', '--dataset', 'synthetic', '--protocol', 'random', '--strategy', 'multitask',
                       '--item-repr', 'id', '--epochs', '2', '--option', 'eval_every=2', '--option', 'progress=false', '--out', out)
    assert code == 0, err
    metrics = json.loads((out/'metrics.json').read_text())['metrics']
    assert 0 < metrics['rmse'] < 5 and 'ndcg@10' in metrics
    code, text, err = cli(capsys, 'recommend', '--run', out, '--user', '1', '--k', '3')
    assert code == 0 and len(text.strip().splitlines()) >= 4, (text, err)
    refused(capsys, ['train', '--dataset', 'synthetic', '--strategy', 'two-tower', '--item-repr', 'id', '--out', tmp_path/'tt'],
            '--item-repr applies to the sequential and multitask strategies')


def test_a_lock_left_by_a_killed_run_does_not_block_the_folder(tmp_path, capsys):
    "A run killed before its first checkpoint leaves only a hidden lock file: the folder is still free to train into."
    out = tmp_path/'run'; out.mkdir(); (out/'.checkpoint.pt.lock').write_text('')
    code, _, err = cli(capsys, 'train', '--dataset', 'synthetic', *TINY, '--out', out)
    assert code == 0 and (out/'config.json').exists(), err


def test_benchmark_names_its_seen_items_policy(tmp_path, capsys):
    "`--seen keep` ranks the user's own items too: the table says so, the JSON records it, and Pop scores no higher."
    scores = {}
    for seen in ('exclude', 'keep'):
        code, out, err = cli(capsys, 'benchmark', '--dataset', 'synthetic', '--protocol', 'loo', '--models', 'pop',
                             '--seen', seen, '--json', tmp_path/f'{seen}.json')
        assert code == 0, err
        assert f"seen items {'excluded' if seen == 'exclude' else 'kept'}" in out
        js = json.loads((tmp_path/f'{seen}.json').read_text())
        assert js['seen'] == seen
        scores[seen] = js['results']['pop']['ndcg@10']
    assert scores['keep'] < scores['exclude']


def test_benchmark_over_seeds_records_both_policies(capsys, tmp_path):
    "--seeds: one fit per seed, measured with seen items excluded and kept, mean ± sd printed and every run recorded."
    code, out, err = cli(capsys, 'benchmark', '--dataset', 'synthetic', '--protocol', 'loo', '--models', 'pop,ease',
                         '--seeds', '0,1', '--json', tmp_path/'s.json')
    assert code == 0 and '±' in out and 'keep' in out and 'exclude' in out
    rec = json.loads((tmp_path/'s.json').read_text())
    assert rec['seeds'] == [0, 1] and [r['seed'] for r in rec['runs']] == [0, 1]
    for r in rec['runs']:
        assert set(r['results']) == set(r['results_keep']) == {'pop', 'ease'}
        assert r['results_keep']['ease']['ndcg@10'] < r['results']['ease']['ndcg@10']   # EASE ranks the history first under keep
    bad = main(['benchmark', '--dataset', 'synthetic', '--models', 'pop', '--seeds', '0,x'])
    assert bad == 2 and 'seeds must be integers' in capsys.readouterr().err
