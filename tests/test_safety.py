"""Safe to load, safe to stop, one writer at a time, whole after a full disk.

- No code runs from files: a pickle whose unpickling would create a marker file is planted in place of each file of a
  sequential checkpoint, a Trainer checkpoint folder and a saved run folder; resuming or loading refuses it with a
  `DataError` (exit 2 through the command line) and the marker never appears.
- SIGTERM/SIGINT during training stop at a step boundary with a complete checkpoint and exit status 128 + signal; the
  resume ends exactly where an uninterrupted run ends.
- `folder_lock`: a second writer gets "in use by PID"; the lock goes when its holder dies.
- `atomic_write`/`atomic_dir` on ENOSPC/EACCES keep the previous content whole and leave no temporary file; a crash
  between the two renames of a folder swap is recovered."""
import contextlib, errno, hashlib, json, os, pickle, shutil, signal, subprocess, sys, tempfile, textwrap, time
from pathlib import Path
import numpy as np
import pytest
import torch

import transferrec.core as core
from transferrec.cli import main
from transferrec.core import DataError, StopRequested, atomic_dir, atomic_write, folder_lock, recover_dir
from transferrec.data import split, synthetic
from transferrec.recommend import Recommender
from transferrec.sequential import SequentialRecommender
from transferrec.twotower import TwoTowerRecommender, ValidatingTrainer, check_checkpoint, last_checkpoint

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
       'PYTHONHASHSEED': '0', 'MPLBACKEND': 'Agg'}


class Payload:
    "Unpickling this object creates `marker`: what a hostile file would do (a real one would run any command)."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (open, (self.marker, 'w'))


def plant(path: Path, marker: Path):
    "Replace `path` with a pickle (torch.save's zip format for torch files, plain pickle otherwise) that creates `marker`."
    path.unlink()
    if path.suffix in ('.pt', '.pth', '.bin'): torch.save({'state': Payload(marker)}, path)
    else: path.write_bytes(pickle.dumps(Payload(marker)))
    assert not marker.exists()


@pytest.fixture(scope='module')
def data():
    return split(synthetic(n_users=100, n_items=60, interactions_per_user=15, seed=1), 'loo')

SEQ = dict(item_repr='id', dim=16, max_len=20, batch_size=16, patience=100, num_threads=1, progress=False)


# ---------------------------------------------------------------- no code execution from files

def test_planted_sequential_checkpoint_is_refused(data, tmp_path):
    ckpt, marker = tmp_path/'checkpoint.pt', tmp_path/'pwned'
    SequentialRecommender(epochs=1, **SEQ).fit(data, checkpoint=ckpt)
    plant(ckpt, marker)
    with pytest.raises(DataError, match='holds code, which is never run'):
        SequentialRecommender(epochs=2, **SEQ).fit(data, checkpoint=ckpt)
    assert not marker.exists()

def test_planted_checkpoint_through_the_command_line(tmp_path, capsys):
    out, marker = tmp_path/'run', tmp_path/'pwned'
    out.mkdir(); torch.save({'epoch': Payload(marker)}, out/'checkpoint.pt')
    code = main(['train', '--dataset', 'synthetic', '--protocol', 'loo', '--item-repr', 'id', '--epochs', '2',
                 '--option', 'dim=16', '--option', 'progress=false', '--out', str(out), '--resume'])
    assert code == 2 and 'never run' in capsys.readouterr().err
    assert not marker.exists()

TOWER = dict(history_items=5, user_max_length=32, item_max_length=16, batch_size=16, max_steps=8, eval_steps=4,
             lr=2e-3, temperature=0.1, warmup_steps=0, patience=None, eval_batch_size=256, num_threads=1, progress=False)

@pytest.fixture(scope='module')
def trainer_checkpoint(tiny_bert, data, tmp_path_factory):
    "A two-tower run stopped after its first checkpoint (step 4 of 8)."
    ckpt = tmp_path_factory.mktemp('tower')/'checkpoints'
    TwoTowerRecommender(model=tiny_bert, **{**TOWER, 'max_steps': 4}).fit(data, checkpoint=ckpt)
    return Path(last_checkpoint(ckpt))

def test_a_trainer_checkpoint_holds_no_pickle(trainer_checkpoint):
    names = sorted(p.name for p in trainer_checkpoint.iterdir())
    assert 'training_args.bin' not in names and {'optimizer.pt', 'rng_state.pth', 'transferrec_state.pt'} <= set(names)
    check_checkpoint(trainer_checkpoint)   # the Trainer's own files and ours all read as plain tensors, values, JSON

def test_planted_trainer_checkpoint_files_are_refused(trainer_checkpoint, tiny_bert, data, tmp_path):
    "Every file of the folder in turn; `fit` refuses two of them end to end (the Trainer's numpy random state and ours)."
    for f in sorted(trainer_checkpoint.iterdir()):
        ckpt = tmp_path/f.name/'checkpoints'; shutil.copytree(trainer_checkpoint.parent, ckpt)
        marker = tmp_path/f'pwned-{f.name}'
        plant(ckpt/trainer_checkpoint.name/f.name, marker)
        with pytest.raises(DataError, match=f.name):
            check_checkpoint(ckpt/trainer_checkpoint.name)
        if f.name in ('rng_state.pth', 'transferrec_state.pt'):
            with pytest.raises(DataError, match='never run'):
                TwoTowerRecommender(model=tiny_bert, **TOWER).fit(data, checkpoint=ckpt)
        assert not marker.exists(), f.name

def file_sha256(path: Path) -> str: return hashlib.sha256(path.read_bytes()).hexdigest()

@pytest.fixture(scope='module')
def planted_runs(data, tmp_path_factory):
    """A saved run, then one copy per file with that file replaced by the payload and config.json's checksums updated to
    match (a careful attacker): {file name: (copy, marker)}."""
    folder = tmp_path_factory.mktemp('runs')
    run = Recommender('sequential', epochs=1, **SEQ).fit(data).save(folder/'run')
    copies = {}
    for name in sorted(p.name for p in run.iterdir()):
        copy, marker = folder/f'copy-{name}', folder/f'pwned-{name}'
        shutil.copytree(run, copy)
        plant(copy/name, marker)
        meta = json.loads((copy/'config.json').read_text()) if name != 'config.json' else None
        if meta is not None and name in meta['files']:
            meta['files'][name] = file_sha256(copy/name); (copy/'config.json').write_text(json.dumps(meta))
        copies[name] = (copy, marker)
    return copies

def test_planted_run_folder_files_run_no_code(planted_runs):
    for name, (copy, marker) in planted_runs.items():
        with contextlib.suppress(Exception): Recommender.load(copy)
        assert not marker.exists(), name

def test_planted_run_folder_files_are_refused(planted_runs, capsys):
    "`Recommender.load` and `transferrec recommend` refuse each planted file with a DataError (exit 2)."
    failures = []
    for name, (copy, marker) in planted_runs.items():
        if name == 'README.md': continue   # the model card: never parsed
        try: Recommender.load(copy); failures.append(f'{name}: loaded')
        except DataError: pass
        except Exception as e: failures.append(f'{name}: {type(e).__name__}')
    assert failures == []
    for name, (copy, marker) in planted_runs.items():
        if name != 'README.md': assert main(['recommend', '--run', str(copy), '--user', '1']) == 2, name
    capsys.readouterr()


def test_every_load_in_the_package_is_safe():
    "No call in transferrec/ that can unpickle: torch.load only with weights_only=True, never allow_pickle=True or pickle."
    import re, transferrec
    unsafe = []
    for f in sorted(Path(transferrec.__file__).parent.glob('*.py')):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split('#')[0]
            if (('torch.load(' in code and 'weights_only=True' not in code)   # np.load refuses pickles unless told otherwise
                    or re.search(r'\bpickle\.(loads?|Unpickler)\b|read_pickle|joblib|dill\.|cloudpickle|weights_only=False'
                                 r'|allow_pickle=True|trust_remote_code=True', code)):
                unsafe.append(f'{f.name}:{n}: {line.strip()}')
    assert unsafe == []


# ---------------------------------------------------------------- SIGTERM / SIGINT: stop at a step boundary

STOPPED_RUN = """
import sys
from transferrec.core import StopRequested
from transferrec.data import split, synthetic
from transferrec.sequential import SequentialRecommender
data = split(synthetic(n_users=100, n_items=60, interactions_per_user=15, seed=1), 'loo')
try: SequentialRecommender(epochs={epochs}, **{seq}).fit(data, checkpoint={ckpt!r})
except StopRequested as e:   # what the command line does with it
    print(f'interrupted: {{e}}', file=sys.stderr); sys.exit(e.exit_code)
"""

EPOCHS = 4

@pytest.fixture(scope='module')
def straight(data):
    "The uninterrupted run the resumed ones must match."
    return SequentialRecommender(epochs=EPOCHS, **SEQ).fit(data)

@pytest.mark.parametrize('signum', [signal.SIGTERM])
def test_a_signal_stops_at_a_batch_and_the_resume_is_exact(signum, data, straight, tmp_path):
    "A real process gets the signal after its first epoch: exit 128 + signal, no traceback, then an exact resume."
    ckpt, epochs = tmp_path/'checkpoint.pt', EPOCHS
    proc = subprocess.Popen([sys.executable, '-c', STOPPED_RUN.format(epochs=epochs, seq=SEQ, ckpt=str(ckpt))],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None: time.sleep(0.05)
    assert ckpt.exists(), proc.communicate()[1]
    proc.send_signal(signum)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + signum, err
    assert 'Traceback' not in err and f'stopped by {signal.Signals(signum).name}' in err and str(ckpt) in err
    stopped_at = core.load_state(ckpt)['epoch']
    assert 1 <= stopped_at < epochs                                          # it stopped mid-training
    resumed = SequentialRecommender(epochs=epochs, **SEQ).fit(data, checkpoint=ckpt)
    assert [h['valid_ndcg@10'] for h in resumed.history] == [h['valid_ndcg@10'] for h in straight.history]
    np.testing.assert_array_equal(resumed.item_matrix(), straight.item_matrix())

def test_sigint_inside_an_epoch_keeps_the_batch_position(data, straight, tmp_path, monkeypatch):
    "Ctrl-C in the middle of epoch 2: the checkpoint records the next batch; the resume finishes that epoch exactly."
    ckpt, calls = tmp_path/'checkpoint.pt', []
    original = SequentialRecommender.batch_loss
    def batch_loss(self, h, items, y):
        calls.append(1)
        if len(calls) == 10: os.kill(os.getpid(), signal.SIGINT)
        return original(self, h, items, y)
    monkeypatch.setattr(SequentialRecommender, 'batch_loss', batch_loss)
    with pytest.raises(StopRequested) as stop:
        SequentialRecommender(epochs=EPOCHS, **SEQ).fit(data, checkpoint=ckpt)
    monkeypatch.undo()
    assert stop.value.exit_code == 130 and stop.value.checkpoint == ckpt
    state = core.load_state(ckpt)
    per_epoch = len(state['partial']['order'].split(SEQ['batch_size']))
    assert (state['epoch'], state['partial']['batch']) == divmod(10, per_epoch)
    resumed = SequentialRecommender(epochs=EPOCHS, **SEQ).fit(data, checkpoint=ckpt)
    assert [h['valid_ndcg@10'] for h in resumed.history] == [h['valid_ndcg@10'] for h in straight.history]
    np.testing.assert_array_equal(resumed.item_matrix(), straight.item_matrix())

def test_sigterm_stops_the_trainer_at_a_step_with_a_checkpoint(tiny_bert, data, tmp_path, monkeypatch):
    "SIGTERM in step 6 of 8 (checkpoints every 4): a checkpoint at step 6, exit code 143, and the resume is exact."
    ckpt, calls = tmp_path/'checkpoints', []
    original = ValidatingTrainer.training_step
    def training_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6: os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(ValidatingTrainer, 'training_step', training_step)
    with pytest.raises(StopRequested) as stop:
        TwoTowerRecommender(model=tiny_bert, **TOWER).fit(data, checkpoint=ckpt)
    monkeypatch.undo()
    assert stop.value.exit_code == 143 and stop.value.checkpoint.endswith('checkpoint-6') and len(calls) == 6
    resumed = TwoTowerRecommender(model=tiny_bert, **TOWER).fit(data, checkpoint=ckpt)
    straight = TwoTowerRecommender(model=tiny_bert, **TOWER).fit(data)
    for a, b in zip(resumed.history, straight.history):
        assert (a['step'], a['train_loss'], a['valid_ndcg@10']) == pytest.approx((b['step'], b['train_loss'], b['valid_ndcg@10']), abs=1e-6)
    np.testing.assert_allclose(resumed.item_vectors_, straight.item_vectors_, atol=1e-5)

def test_stop_requests_restores_handlers_and_ignores_other_threads():
    import threading
    before = signal.getsignal(signal.SIGTERM)
    with core.stop_requests() as flag:
        assert signal.getsignal(signal.SIGTERM) is not before and not flag.requested
        seen = []
        t = threading.Thread(target=lambda: seen.append(core.stop_requests().__enter__() is flag)); t.start(); t.join()
    assert signal.getsignal(signal.SIGTERM) is before and seen == [True]   # a nested block (any thread) shares the flag


# ---------------------------------------------------------------- one writer at a time

def forked(child) -> tuple[int, int]:
    "Run `child()` in a forked process (a second writer without an interpreter start-up): its PID and a pipe it wrote to."
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: never returns into pytest
        try: os.close(r); child(w)
        finally: os._exit(0)
    os.close(w)
    return pid, r

def hold_lock(path):
    def child(w):
        with folder_lock(path): os.write(w, b'locked'); time.sleep(60)
    return child

def test_a_second_writer_is_refused_until_the_holder_dies(tmp_path):
    out = tmp_path/'run'
    pid, r = forked(hold_lock(out))
    try:
        assert os.read(r, 6) == b'locked'
        with pytest.raises(DataError, match=f'in use by PID {pid} .*choose another --out'):
            atomic_dir(out, lambda tmp: (tmp/'a.txt').write_text('x'))
        with pytest.raises(DataError, match=f'in use by PID {pid}'):
            with folder_lock(out): pass
    finally:
        os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0); os.close(r)
    atomic_dir(out, lambda tmp: (tmp/'a.txt').write_text('x'))   # the kernel released the dead holder's lock
    assert (out/'a.txt').read_text() == 'x'

def test_training_into_a_locked_checkpoint_is_refused(data, tmp_path):
    ckpt = tmp_path/'checkpoint.pt'
    with folder_lock(ckpt):   # held by this process: a nested writer in the same process may go on
        SequentialRecommender(epochs=1, **SEQ).fit(data, checkpoint=ckpt)
    pid, r = forked(hold_lock(ckpt))
    try:
        assert os.read(r, 6) == b'locked'
        with pytest.raises(DataError, match=f'in use by PID {pid}'):
            SequentialRecommender(epochs=2, **SEQ).fit(data, checkpoint=ckpt)
    finally:
        os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0); os.close(r)


# ---------------------------------------------------------------- full disk, read-only, crash between renames

def hidden(folder: Path) -> list[str]: return sorted(p.name for p in folder.iterdir() if p.name.startswith('.'))

class FullDisk:
    def write(self, data): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

def test_full_disk_keeps_the_previous_file_and_folder(tmp_path):
    with atomic_write(tmp_path/'a.json', 'w') as f: f.write('old')
    with pytest.raises(DataError, match=r"could not write the file .*a\.json.*disk is full.*free some space"):
        with atomic_write(tmp_path/'a.json', 'w') as f: f.write('ne'); FullDisk().write('w')
    assert (tmp_path/'a.json').read_text() == 'old' and hidden(tmp_path) == []
    atomic_dir(tmp_path/'run', lambda tmp: (tmp/'w.txt').write_text('old'))
    def full(tmp): (tmp/'w.txt').write_text('half'); FullDisk().write('rest')
    with pytest.raises(DataError, match=r"could not write the folder .*run.*ENOSPC"):
        atomic_dir(tmp_path/'run', full)
    assert (tmp_path/'run'/'w.txt').read_text() == 'old' and hidden(tmp_path) == []

def test_full_disk_while_the_trainer_saves_is_a_clear_error(tiny_bert, data, tmp_path, monkeypatch):
    "The Trainer writes its checkpoint files itself: ENOSPC there is a DataError naming the folder, not a traceback."
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        if str(f).endswith('optimizer.pt'): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, 'save', save)
    with pytest.raises(DataError, match=r"could not write the checkpoint folder .*checkpoints.*disk is full"):
        TwoTowerRecommender(model=tiny_bert, **{**TOWER, 'max_steps': 4}).fit(data, checkpoint=tmp_path/'checkpoints')
    assert last_checkpoint(tmp_path/'checkpoints') is None   # the half-written checkpoint is never resumed from

def test_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    ro = tmp_path/'ro'; ro.mkdir()
    atomic_dir(ro/'run', lambda tmp: (tmp/'w.txt').write_text('old'))
    if os.geteuid() == 0:   # root writes anywhere: the kernel's answer for a read-only folder, simulated
        def denied(*args, **kwargs): raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        monkeypatch.setattr(tempfile, 'mkstemp', denied); monkeypatch.setattr(tempfile, 'mkdtemp', denied)
    else: ro.chmod(0o555)
    try:
        with pytest.raises(DataError, match='permission denied.*choose a folder you can write to'):
            with atomic_write(ro/'a.json', 'w') as f: f.write('x')
        with pytest.raises(DataError, match='permission denied'):
            atomic_dir(ro/'run', lambda tmp: (tmp/'w.txt').write_text('new'))
    finally: ro.chmod(0o755)
    assert (ro/'run'/'w.txt').read_text() == 'old' and not (ro/'a.json').exists() and hidden(ro) == []

def crash_in_swap(run: Path, crash_at: int) -> int:
    "Save `run` again in a forked process killed (os._exit) at the `crash_at`-th rename of the swap: its exit status."
    def child(w):
        core.exchange_paths = lambda a, b: False   # as on a system without the one-step swap
        real, calls = os.replace, []
        def replace(src, dst):   # 1: the new folder is complete, 2: the old one moves aside, 3: the new one moves in
            calls.append(dst)
            if len(calls) == crash_at: os._exit(9)
            real(src, dst)
        os.replace = replace
        atomic_dir(run, lambda tmp: (tmp/'w.txt').write_text('new'))
    pid, r = forked(child); os.close(r)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

@pytest.mark.parametrize('crash_at, survivor', [(3, 'new'), (2, 'old'), (1, 'old')])
def test_a_crash_inside_the_swap_is_recovered(tmp_path, crash_at, survivor):
    run = tmp_path/'run'
    atomic_dir(run, lambda tmp: (tmp/'w.txt').write_text('old'))
    assert crash_in_swap(run, crash_at) == 9
    if crash_at == 3: assert not run.exists()                          # the window: no folder at the path
    recover_dir(run)
    assert (run/'w.txt').read_text() == survivor and hidden(tmp_path) == []

def test_the_next_save_cleans_up_after_a_crash(tmp_path):
    run = tmp_path/'run'
    atomic_dir(run, lambda tmp: (tmp/'w.txt').write_text('old'))
    assert crash_in_swap(run, 1) == 9 and hidden(tmp_path)            # a complete copy left hidden
    atomic_dir(run, lambda tmp: (tmp/'w.txt').write_text('newest'))
    assert (run/'w.txt').read_text() == 'newest' and hidden(tmp_path) == []

def test_the_one_step_swap_always_names_a_complete_folder(tmp_path):
    a, b = tmp_path/'a', tmp_path/'b'
    a.mkdir(); b.mkdir(); (a/'x').write_text('a'); (b/'x').write_text('b')
    if not core.exchange_paths(a, b): pytest.skip('this system cannot swap two folders in one step')
    assert ((a/'x').read_text(), (b/'x').read_text()) == ('b', 'a')
