"""Resuming counts: after an interruption, every strategy runs only the epochs or steps that were left.

Training is seeded and deterministic, so a resume that quietly started again from epoch 0 would end with the same
weights and metrics as one that really continued: comparing results cannot tell the two apart. These tests count the
work done after resuming, through public methods only: `SequentialRecommender.batch_loss` (the training-loss hook,
called once per batch) and the Hugging Face `Trainer.training_step` of `ValidatingTrainer` (called once per step).
An interruption is an exception raised from the counted method, as Ctrl-C would: the checkpoint of the last finished
epoch or step stays behind.

Mutation check: `test_a_restart_from_zero_is_counted` and `test_a_trainer_restart_from_zero_is_counted` make the resume
start again from zero (the checkpoint file or folder removed before resuming) and show that the count sees it while
the final weights and curve do not. The SIGKILL two-tower resume lives in tests/test_strategies.py and the
SIGKILL CLI resume in tests/test_cli_runs.py (there the epochs before the kill must come back from the checkpoint
unchanged, wall-clock seconds included, which a rerun would not reproduce); this file adds the counts for every
strategy."""
import contextlib, json, math, shutil
import numpy as np
import pytest

import transferrec.twotower
from transferrec.cli import load_dataset, main
from transferrec.crossencoder import CrossEncoderReranker
from transferrec.data import split, synthetic
from transferrec.recommend import Recommender
from transferrec.sequential import SequentialRecommender, history_windows
from transferrec.twotower import TwoTowerRecommender, ValidatingTrainer


class Interrupted(Exception):
    "Raised by a counted method to stop training part-way."


@contextlib.contextmanager
def counted(cls, name: str, stop_after: int|None=None, error=Interrupted):
    "Count calls of the method `cls.name` while the block runs; the call after `stop_after` calls raises `error`."
    own, original, calls = name in vars(cls), getattr(cls, name), []
    def method(self, *args, **kwargs):
        if stop_after is not None and len(calls) == stop_after: raise error(f'stopped after {stop_after} calls of {name}')
        calls.append(1)
        return original(self, *args, **kwargs)
    setattr(cls, name, method)
    try: yield calls
    finally:
        if own: setattr(cls, name, original)
        else: delattr(cls, name)


# ---------------------------------------------------------------- sequential: epochs, counted in batches

@pytest.fixture(scope='module')
def data():
    return split(synthetic(n_users=100, n_items=60, interactions_per_user=15, seed=1), 'loo')

SEQ = dict(dim=16, max_len=20, batch_size=32, patience=100, num_threads=1, progress=False)

def batches_per_epoch(split_, max_len: int, batch_size: int) -> int:
    "Training batches in one epoch: one per `batch_size` history windows of the training histories."
    return math.ceil(len(history_windows(split_.histories('valid'), max_len)[0]) / batch_size)

@pytest.fixture(scope='module', params=['id', 'text+id', 'text-tuned'])
def seq_config(request, tiny_bert):
    """Each sequential variant: ID items; text+ID items on frozen text vectors (the adaptor and the ID table train); a
    text model whose encoder's top layer trains with it (the checkpoint then holds that layer too)."""
    if request.param == 'id': return {**SEQ, 'item_repr': 'id'}
    if request.param == 'text+id': return {**SEQ, 'item_repr': 'text+id', 'model': tiny_bert}
    return {**SEQ, 'item_repr': 'text', 'model': tiny_bert, 'trainable_layers': 1}

@pytest.fixture(scope='module')
def straight(seq_config, data):
    "Five epochs without interruption, with the number of batches they took."
    with counted(SequentialRecommender, 'batch_loss') as calls:
        rec = Recommender('sequential', epochs=5, **seq_config).fit(data)
    return rec, len(calls)

def test_straight_run_counts_its_batches(straight, data):
    rec, calls = straight
    n = batches_per_epoch(data, SEQ['max_len'], SEQ['batch_size'])
    assert n >= 3 and calls == 5 * n and [h['epoch'] for h in rec.history] == [1, 2, 3, 4, 5]

def test_sequential_fit_resumes_where_it_stopped(straight, seq_config, data, tmp_path):
    "Stopped in epoch 3, `fit(split, checkpoint=...)` runs epochs 3-5 only and ends where the straight run ends."
    n, ckpt = batches_per_epoch(data, SEQ['max_len'], SEQ['batch_size']), tmp_path/'ckpt.pt'
    with counted(SequentialRecommender, 'batch_loss', stop_after=2 * n), pytest.raises(Interrupted):
        Recommender('sequential', epochs=5, **seq_config).fit(data, checkpoint=ckpt)
    assert ckpt.exists()
    with counted(SequentialRecommender, 'batch_loss') as calls:
        resumed = Recommender('sequential', epochs=5, **seq_config).fit(data, checkpoint=ckpt)
    assert len(calls) == 3 * n                                   # epochs 3, 4 and 5: not 5 epochs again
    ref = straight[0]
    assert [h['epoch'] for h in resumed.history] == [1, 2, 3, 4, 5]
    assert [h['valid_ndcg@10'] for h in resumed.history] == pytest.approx([h['valid_ndcg@10'] for h in ref.history], abs=1e-9)
    np.testing.assert_allclose(resumed.model.item_matrix(), ref.model.item_matrix(), atol=1e-6)

def test_a_longer_budget_continues_a_finished_checkpoint(data, tmp_path):
    "A run of 2 epochs, resumed with epochs=5, trains 3 more epochs (the epoch budget may grow on resume)."
    n, ckpt, cfg = batches_per_epoch(data, SEQ['max_len'], SEQ['batch_size']), tmp_path/'ckpt.pt', {**SEQ, 'item_repr': 'id'}
    with counted(SequentialRecommender, 'batch_loss') as first:
        SequentialRecommender(epochs=2, **cfg).fit(data, checkpoint=ckpt)
    with counted(SequentialRecommender, 'batch_loss') as more:
        longer = SequentialRecommender(epochs=5, **cfg).fit(data, checkpoint=ckpt)
    assert (len(first), len(more)) == (2 * n, 3 * n)
    assert [h['epoch'] for h in longer.history] == [1, 2, 3, 4, 5]

def test_a_restart_from_zero_is_counted(data, tmp_path):
    """Mutation: a resume that starts again from zero (here: its checkpoint is gone) trains all 5 epochs and ends with
    the same curve and weights as the straight run, so only the count can tell it from a real resume."""
    n, ckpt, cfg = batches_per_epoch(data, SEQ['max_len'], SEQ['batch_size']), tmp_path/'ckpt.pt', {**SEQ, 'item_repr': 'id'}
    with counted(SequentialRecommender, 'batch_loss', stop_after=2 * n), pytest.raises(Interrupted):
        SequentialRecommender(epochs=5, **cfg).fit(data, checkpoint=ckpt)
    ckpt.unlink()
    with counted(SequentialRecommender, 'batch_loss') as calls:
        restarted = SequentialRecommender(epochs=5, **cfg).fit(data, checkpoint=ckpt)
    assert len(calls) == 5 * n != 3 * n                          # the resume tests' count fails on this
    ref = SequentialRecommender(epochs=5, **cfg).fit(data)
    assert [h['valid_ndcg@10'] for h in restarted.history] == [h['valid_ndcg@10'] for h in ref.history]
    np.testing.assert_array_equal(restarted.item_matrix(), ref.item_matrix())


# ---------------------------------------------------------------- sequential through the command line

CLI = ['--dataset', 'synthetic', '--protocol', 'loo', '--item-repr', 'id', '--epochs', '4', '--option', 'patience=100',
       '--option', 'dim=16', '--option', 'max_len=20', '--option', 'batch_size=64', '--option', 'progress=false']

def test_cli_resume_runs_only_the_remaining_epochs(tmp_path, capsys):
    "`transferrec train` stopped by Ctrl-C in epoch 3 of 4: `--resume` trains 2 epochs and saves the straight run's result."
    n = batches_per_epoch(split(load_dataset('synthetic'), 'loo'), 20, 64)
    out, ref = tmp_path/'run', tmp_path/'straight'
    with counted(SequentialRecommender, 'batch_loss', stop_after=2 * n, error=KeyboardInterrupt):
        assert main(['train', *CLI, '--out', str(out)]) == 130
    assert (out/'checkpoint.pt').exists() and not (out/'config.json').exists()
    with counted(SequentialRecommender, 'batch_loss') as calls:
        assert main(['train', *CLI, '--out', str(out), '--resume']) == 0
    assert len(calls) == 2 * n                                   # epochs 3 and 4 only
    assert [h['epoch'] for h in json.loads((out/'config.json').read_text())['history']] == [1, 2, 3, 4]
    with counted(SequentialRecommender, 'batch_loss') as calls:
        assert main(['train', *CLI, '--out', str(ref)]) == 0
    assert len(calls) == 4 * n
    metrics = lambda run: json.loads((run/'metrics.json').read_text())['metrics']
    assert metrics(out) == pytest.approx(metrics(ref), abs=1e-9)
    capsys.readouterr()


# ---------------------------------------------------------------- two-tower and cross-encoder: Trainer steps

TOWER = dict(history_items=5, user_max_length=32, item_max_length=16, batch_size=16, max_steps=12, eval_steps=4,
             lr=2e-3, temperature=0.1, warmup_steps=0, patience=None, eval_batch_size=256, num_threads=1, progress=False)
RERANK = dict(top_n=10, neg_ratio=2, history_items=5, max_length=48, batch_size=16, max_pairs=96, max_steps=12,
              eval_steps=4, eval_users=20, lr=1e-3, warmup_steps=0, patience=None, eval_batch_size=256, num_threads=1,
              progress=False)

def trainer_model(strategy: str, tiny_bert: str):
    if strategy == 'two-tower': return TwoTowerRecommender(model=tiny_bert, **TOWER)
    return CrossEncoderReranker('pop', model=tiny_bert, **RERANK)

def final_state(model, data) -> np.ndarray:
    "What training produced: the item vectors of a two-tower model, the re-ranked scores of a cross-encoder."
    if isinstance(model, TwoTowerRecommender): return model.item_vectors_
    return model.score(np.arange(8), on='valid')

@pytest.mark.parametrize('strategy', ['two-tower', 'cross-encoder'])
def test_trainer_resume_runs_only_the_remaining_steps(strategy, tiny_bert, data, tmp_path):
    "Stopped in step 10 of 12 (checkpoints every 4 steps): resuming runs steps 9-12 and ends as the straight run."
    ckpt = tmp_path/'checkpoints'
    with counted(ValidatingTrainer, 'training_step', stop_after=9), pytest.raises(Interrupted):
        trainer_model(strategy, tiny_bert).fit(data, checkpoint=ckpt)
    assert transferrec.twotower.last_checkpoint(ckpt).endswith('checkpoint-8')
    with counted(ValidatingTrainer, 'training_step') as calls:
        resumed = trainer_model(strategy, tiny_bert).fit(data, checkpoint=ckpt)
    assert len(calls) == 4 and resumed.train_stats_['steps'] == 12        # steps 9-12: not 12 steps again
    with counted(ValidatingTrainer, 'training_step') as calls:
        ref = trainer_model(strategy, tiny_bert).fit(data)
    assert len(calls) == 12
    assert [h['step'] for h in resumed.history] == [h['step'] for h in ref.history] == [4, 8, 12]
    assert [h['valid_ndcg@10'] for h in resumed.history] == pytest.approx([h['valid_ndcg@10'] for h in ref.history], abs=1e-6)
    np.testing.assert_allclose(final_state(resumed, data), final_state(ref, data), atol=1e-5)

def test_a_trainer_restart_from_zero_is_counted(tiny_bert, data, tmp_path):
    "Mutation: when the checkpoints are gone, the 'resumed' two-tower run trains all 12 steps, which the count rejects."
    ckpt = tmp_path/'checkpoints'
    with counted(ValidatingTrainer, 'training_step', stop_after=9), pytest.raises(Interrupted):
        trainer_model('two-tower', tiny_bert).fit(data, checkpoint=ckpt)
    shutil.rmtree(ckpt)
    with counted(ValidatingTrainer, 'training_step') as calls:
        trainer_model('two-tower', tiny_bert).fit(data, checkpoint=ckpt)
    assert len(calls) == 12 != 4
