"`transferrec train | evaluate | recommend | quickstart`: run folders, resume after SIGKILL, one-line errors."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from transferrec.cli import main, parser, STRATEGY_NAMES
from transferrec.core import load_state

EXE = str(Path(sys.executable).parent/'transferrec')
# a small ID model on a k-core of ml-100k: a few seconds per epoch on one thread
SMALL = ['--dataset', 'ml-100k', '--min-item', '100', '--protocol', 'loo', '--item-repr', 'id', '--epochs', '4',
         '--option', 'patience=10', '--option', 'dim=16', '--option', 'max_len=20', '--option', 'progress=false']

def run(*args, timeout=600):
    "The installed command in a real subprocess."
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)

def call(capsys, *args):
    "The command in-process (no start-up cost): exit status, stdout, stderr."
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err

@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp('runs')/'straight'
    r = run('train', *SMALL, '--out', str(out))
    assert r.returncode == 0, r.stderr
    return out

def test_strategy_names_match_the_registry():
    from transferrec.recommend import STRATEGIES
    assert tuple(STRATEGIES) == STRATEGY_NAMES

@pytest.mark.parametrize('cmd', ['quickstart', 'train', 'evaluate', 'recommend'])
def test_help_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e: parser().parse_args([cmd, '--help'])
    assert e.value.code == 0 and f'example: transferrec {cmd}' in capsys.readouterr().out

def test_train_writes_a_complete_run(straight):
    from transferrec.recommend import FORMAT_VERSION
    names = {p.name for p in straight.iterdir()}
    weights = 'weights.safetensors' if FORMAT_VERSION >= 3 else 'weights.pt'   # format 3 saves weights as safetensors
    assert {'config.json', weights, 'items.json', 'histories.npz', 'metrics.json'} <= names
    assert 'checkpoint.pt' not in names                       # replaced by the finished run
    meta = json.loads((straight/'config.json').read_text())
    assert meta['data']['source']['min_item'] == 100 and meta['settings']['seed'] == 0 and meta['data']['fingerprint']
    assert [h['epoch'] for h in meta['history']] == [1, 2, 3, 4]

def test_evaluate_reproduces_training_metrics(straight, tmp_path, capsys):
    code, out, err = call(capsys, 'evaluate', '--run', str(straight), '--json', str(tmp_path/'e.json'))
    assert code == 0, err
    trained = json.loads((straight/'metrics.json').read_text())['metrics']
    assert json.loads((tmp_path/'e.json').read_text()) == pytest.approx(trained, abs=1e-9)
    code, out, err = call(capsys, 'evaluate', '--run', str(straight), '--protocol', 'random')
    assert code == 2 and "trained on the 'loo' split" in err

def test_recommend_from_a_shell(straight, tmp_path):
    r = run('recommend', '--run', str(straight), '--user', '1', '--k', '5', '--json', str(tmp_path/'r.json'))
    assert r.returncode == 0, r.stderr
    recs = json.loads((tmp_path/'r.json').read_text())
    assert len(recs) == 5 and {'item_id', 'title', 'score', 'because'} <= set(recs[0])

@pytest.mark.parametrize('args,fragment', [
    (('--history', '50,181', '--k', '3'), None),
    (('--text', 'robots'), 'ID-only model cannot read a text'),
    (('--history', '50,abc'), 'ids of this run are integers'),
    (('--history', '99999'), 'unknown item id'),
    (('--user', '1', '--text', 'x'), 'exactly one of'),
    (('--user', '1', '--k', '0'), 'positive integer'),
    (('--user', 'nobody'), 'integers'),
])
def test_recommend_inputs(straight, capsys, args, fragment):
    code, out, err = call(capsys, 'recommend', '--run', str(straight), *args)
    if fragment is None: assert code == 0 and len(out.strip().splitlines()) == 4
    else: assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err

def test_resume_after_sigkill_matches_uninterrupted(straight, tmp_path, capsys):
    out = tmp_path/'killed'
    proc = subprocess.Popen([EXE, 'train', *SMALL, '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out/'checkpoint.pt').exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    assert (out/'checkpoint.pt').exists() and not (out/'config.json').exists(), "the run finished before it was killed"
    saved = load_state(out/'checkpoint.pt')                      # what the killed run finished: epochs 1..done
    done = saved['epoch']
    assert 1 <= done < 4 and [h['epoch'] for h in saved['history']] == list(range(1, done + 1))
    code, _, err = call(capsys, 'train', *SMALL, '--out', str(out))
    assert code == 2 and '--resume' in err                     # an interrupted run is never silently restarted
    code, _, err = call(capsys, 'train', *SMALL, '--option', 'dim=8', '--out', str(out), '--resume')
    assert code == 2 and 'other settings or data' in err
    r = run('train', *SMALL, '--out', str(out), '--resume')
    assert r.returncode == 0, r.stderr
    a = json.loads((straight/'metrics.json').read_text())['metrics']
    b = json.loads((out/'metrics.json').read_text())['metrics']
    assert b == pytest.approx(a, abs=1e-6)
    # Resumed, not restarted: training is seeded, so a rerun from epoch 1 ends with the same metrics, but not with the
    # same wall-clock `seconds`. The finished epochs come back from the checkpoint unchanged and only the rest ran.
    history = json.loads((out/'config.json').read_text())['history']
    assert [h['epoch'] for h in history] == [1, 2, 3, 4] and history[:done] == saved['history']
    rerun = json.loads((straight/'config.json').read_text())['history'][:done]   # what training those epochs again gives
    assert [h['valid_ndcg@10'] for h in rerun] == pytest.approx([h['valid_ndcg@10'] for h in saved['history']], abs=1e-9)
    assert rerun != saved['history']                              # so the equality above tells a resume from a restart

def test_train_refuses_to_overwrite(straight, tmp_path, capsys):
    code, _, err = call(capsys, 'train', *SMALL, '--out', str(straight))
    assert code == 2 and 'already holds a finished run' in err
    code, _, err = call(capsys, 'train', *SMALL, '--out', str(tmp_path/'new'), '--resume')
    assert code == 2 and 'nothing to resume' in err

def test_quickstart_fast_writes_report(tmp_path):
    out = tmp_path/'qs'
    r = run('quickstart', '--fast', '--dataset', 'synthetic', '--out', str(out))
    assert r.returncode == 0, r.stderr
    assert {'metrics.json', 'results.md', 'metrics.png', 'training_curves.png', 'model'} == {p.name for p in out.iterdir()}
    assert (out/'metrics.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'      # written whole through atomic_write
    m = json.loads((out/'metrics.json').read_text())['results']
    assert set(m) == {'loo', 'cold'} and 'sequential-text+id' in m['loo'] and 'ndcg@10_cold' in m['cold']['sequential-text']
    assert 'top 10 for user' in r.stdout and 'top 10 for a new user' in r.stdout

def test_train_two_tower_run(tiny_bert, tmp_path, capsys):
    out = tmp_path/'tower'
    opts = ['--option', 'max_steps=6', '--option', 'eval_steps=3', '--option', 'batch_size=16', '--option', 'progress=false',
            '--option', 'num_threads=1', '--option', 'trainable_layers=null']
    code, _, err = call(capsys, 'train', '--dataset', 'synthetic', '--strategy', 'two-tower', '--model', tiny_bert, *opts,
                        '--out', str(out))
    assert code == 0, err
    assert (out/'encoder'/'config.json').exists() and not (out/'checkpoints').exists()
    code, text, err = call(capsys, 'recommend', '--run', str(out), '--text', 'space adventures', '--k', '3')
    assert code == 0 and len(text.strip().splitlines()) == 4, err
    code, _, err = call(capsys, 'evaluate', '--run', str(out), '--json', str(tmp_path/'e.json'))
    assert code == 0, err
    trained = json.loads((out/'metrics.json').read_text())['metrics']
    assert json.loads((tmp_path/'e.json').read_text()) == pytest.approx(trained, abs=1e-6)
