"Saved runs are never half-written: a save killed midway leaves the previous run whole; mixed or edited runs are refused."
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np
import pytest

from transferrec.core import DataError
from transferrec.data import split, synthetic
from transferrec.recommend import Recommender


@pytest.fixture(scope='module')
def data():
    return split(synthetic(n_users=60, n_items=40, interactions_per_user=10, seed=5), 'loo')


@pytest.fixture(scope='module')
def rec(data):
    return Recommender('sequential', item_repr='text', epochs=2, dim=16, max_len=10, progress=False).fit(data)


def test_kill_mid_save_keeps_previous_run(rec, data, tmp_path):
    run = rec.save(tmp_path/'run')
    before = Recommender.load(run).score(np.arange(data.n_users))
    script = textwrap.dedent(f"""
        import time, transferrec.recommend as r
        rec = r.Recommender.load({str(run)!r})
        slow = r.file_sha256
        def sha(p):
            print('writing', flush=True); time.sleep(30); return slow(p)
        r.file_sha256 = sha
        rec.save({str(run)!r})
    """)
    proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'writing'          # the new copy is half-written now
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    np.testing.assert_array_equal(Recommender.load(run).score(np.arange(data.n_users)), before)
    rec.save(run)                                               # a leftover temporary folder does not get in the way
    assert Recommender.load(run).strategy == 'sequential'


def _edit_config(run: Path, change):
    meta = json.loads((run/'config.json').read_text()); change(meta)
    (run/'config.json').write_text(json.dumps(meta))


def test_run_of_another_strategy_is_refused(rec, tmp_path):
    run = rec.save(tmp_path/'run')
    _edit_config(run, lambda m: m.update(strategy='two-tower', config={}))
    with pytest.raises(DataError, match='not saved by the two-tower strategy'): Recommender.load(run)


def test_run_of_another_architecture_is_refused(rec, tmp_path):
    run = rec.save(tmp_path/'run')
    _edit_config(run, lambda m: m['config'].update(dim=32))
    with pytest.raises(DataError, match='do not fit this model'): Recommender.load(run)


@pytest.mark.parametrize('damage,fragment', [
    (lambda run: (run/'weights.safetensors').unlink(), 'is missing'),
    (lambda run: (run/'weights.safetensors').write_bytes((run/'weights.safetensors').read_bytes()[:50]), 'corrupt'),
    (lambda run: (run/'config.json').write_text('{"format_version": 2, "strat'), 'corrupt'),
    (lambda run: _edit_config(run, lambda m: m.update(format_version=1, transferrec_version='0.0.1')), 'transferrec 0.0.1'),
    (lambda run: _edit_config(run, lambda m: m.pop('files')), 'damaged'),
])
def test_damaged_runs(rec, tmp_path, damage, fragment):
    run = rec.save(tmp_path/'run')
    damage(run)
    with pytest.raises(DataError, match=fragment): Recommender.load(run)


def test_unsaveable_option_is_refused_before_writing(data, tmp_path):
    vecs = np.random.default_rng(0).normal(size=(data.n_items, 8)).astype(np.float32)
    r = Recommender('sequential', item_repr='text', text_vectors=vecs, epochs=1, dim=8, max_len=5, progress=False).fit(data)
    with pytest.raises(DataError, match='cannot be saved'): r.save(tmp_path/'run')
    assert not (tmp_path/'run').exists()
