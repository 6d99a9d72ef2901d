"`transferrec train | evaluate | recommend | quickstart` as a user runs them: real subprocesses, run folders, resume after SIGKILL."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

EXE = str(Path(sys.executable).parent/'transferrec')
# a small ID model on a k-core of ml-100k: a few seconds per epoch on one thread
SMALL = ['--dataset', 'ml-100k', '--min-item', '100', '--protocol', 'loo', '--item-repr', 'id', '--epochs', '4',
         '--option', 'patience=10', '--option', 'dim=16', '--option', 'max_len=20', '--option', 'progress=false']

def run(*args, timeout=600):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)

@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp('runs')/'straight'
    r = run('train', *SMALL, '--out', str(out), '--json', str(out.parent/'straight.json'))
    assert r.returncode == 0, r.stderr
    return out

def test_help_examples():
    for cmd in ('quickstart', 'train', 'evaluate', 'recommend'):
        h = run(cmd, '--help')
        assert h.returncode == 0 and f'example: transferrec {cmd}' in h.stdout

def test_train_writes_a_complete_run(straight):
    names = {p.name for p in straight.iterdir()}
    assert {'config.json', 'weights.pt', 'items.json', 'histories.npz', 'metrics.json'} <= names
    assert 'checkpoint.pt' not in names                       # replaced by the finished run
    meta = json.loads((straight/'config.json').read_text())
    assert meta['data']['source']['min_item'] == 100 and meta['settings']['seed'] == 0 and meta['data']['fingerprint']
    assert [h['epoch'] for h in meta['history']] == [1, 2, 3, 4]

def test_evaluate_reproduces_training_metrics(straight, tmp_path):
    r = run('evaluate', '--run', str(straight), '--json', str(tmp_path/'e.json'))
    assert r.returncode == 0, r.stderr
    trained = json.loads((straight/'metrics.json').read_text())['metrics']
    assert json.loads((tmp_path/'e.json').read_text()) == pytest.approx(trained, abs=1e-9)

def test_recommend_user_history_and_errors(straight, tmp_path):
    r = run('recommend', '--run', str(straight), '--user', '1', '--k', '5', '--json', str(tmp_path/'r.json'))
    assert r.returncode == 0, r.stderr
    recs = json.loads((tmp_path/'r.json').read_text())
    assert len(recs) == 5 and {'item_id', 'title', 'score', 'because'} <= set(recs[0])
    assert run('recommend', '--run', str(straight), '--history', '50,181', '--k', '3').returncode == 0
    for args, fragment in [(('--text', 'robots'), 'ID-only model cannot read a text'),
                           (('--history', '50,abc'), 'ids of this run are integers'),
                           (('--user', '1', '--text', 'x'), 'exactly one of'),
                           (('--user', '1', '--k', '0'), 'positive integer')]:
        bad = run('recommend', '--run', str(straight), *args)
        assert bad.returncode == 2 and fragment in bad.stderr and 'Traceback' not in bad.stderr, bad.stderr

def test_resume_after_sigkill_matches_uninterrupted(straight, tmp_path):
    out = tmp_path/'killed'
    proc = subprocess.Popen([EXE, 'train', *SMALL, '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out/'checkpoint.pt').exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    assert (out/'checkpoint.pt').exists() and not (out/'config.json').exists(), "the run finished before it was killed"
    again = run('train', *SMALL, '--out', str(out))
    assert again.returncode == 2 and '--resume' in again.stderr          # an interrupted run is never silently restarted
    r = run('train', *SMALL, '--out', str(out), '--resume')
    assert r.returncode == 0, r.stderr
    a = json.loads((straight/'metrics.json').read_text())['metrics']
    b = json.loads((out/'metrics.json').read_text())['metrics']
    assert b == pytest.approx(a, abs=1e-6)

def test_resume_refuses_other_settings(tmp_path):
    out = tmp_path/'run'
    proc = subprocess.Popen([EXE, 'train', *SMALL, '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out/'checkpoint.pt').exists() and proc.poll() is None: time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    r = run('train', *SMALL, '--option', 'dim=8', '--out', str(out), '--resume')
    assert r.returncode == 2 and 'other settings or data' in r.stderr

def test_evaluate_refuses_changed_data(straight, tmp_path):
    r = run('evaluate', '--run', str(straight), '--protocol', 'random')
    assert r.returncode == 2 and "trained on the 'loo' split" in r.stderr

def test_quickstart_fast_writes_report(tmp_path):
    out = tmp_path/'qs'
    r = run('quickstart', '--fast', '--dataset', 'synthetic', '--out', str(out))
    assert r.returncode == 0, r.stderr
    assert {'metrics.json', 'results.md', 'metrics.png', 'training_curves.png', 'model'} <= {p.name for p in out.iterdir()}
    m = json.loads((out/'metrics.json').read_text())['results']
    assert set(m) == {'loo', 'cold'} and 'sequential-text+id' in m['loo'] and 'ndcg@10_cold' in m['cold']['sequential-text']
    assert 'top 10 for user' in r.stdout and 'top 10 for a new user' in r.stdout
