"The multi-task strategy: ratings from the rating head, the joint loss and its gradients, save/restore, learned weights."
import numpy as np
import pandas as pd
import pytest
import torch

from transferrec.core import DataError, missing_methods
from transferrec.data import split, synthetic
from transferrec.metrics import rating_metrics
from transferrec.multitask import MultiTaskModel, MultiTaskRecommender, UncertaintyWeights, joint_loss, task_losses, light_users

FAST = dict(dim=16, epochs=12, eval_every=6, batch_size=64, num_threads=1, progress=False)


@pytest.fixture(scope='module')
def data():
    return split(synthetic(n_users=120, n_items=80, interactions_per_user=20, seed=3), 'random', seed=0)


@pytest.fixture(scope='module')
def fitted(data):
    return MultiTaskRecommender(item_repr='id', **FAST).fit(data)


def test_contract():
    assert missing_methods(MultiTaskRecommender) == []
    with pytest.raises(DataError, match='choose one of'): MultiTaskRecommender(weighting='gradnorm')
    with pytest.raises(DataError, match='not both 0'): MultiTaskRecommender(w_rating=0, w_rank=0)


def test_predict_beats_global_mean(fitted, data):
    pred = fitted.predict(data.test)
    assert pred.shape == (len(data.test),) and np.isfinite(pred).all()
    assert pred.min() >= 1 and pred.max() <= 5                       # clipped to the training scale
    mean = rating_metrics(data.test['rating'], np.full(len(data.test), data.train['rating'].mean()))['rmse']
    assert rating_metrics(data.test['rating'], pred)['rmse'] < mean
    with pytest.raises(DataError, match='known users only'):
        fitted.predict(pd.DataFrame({'user_idx': [data.n_users], 'item_idx': [0]}))
    scores = fitted.score_histories(data.histories('test')[:3])
    assert scores.shape == (3, data.n_items)
    np.testing.assert_allclose(scores, fitted.user_vectors(data.histories('test')[:3]) @ fitted.item_matrix().T, atol=1e-4)
    m = fitted.evaluate(data, 'test', users=light_users(data))
    assert 0 < m['ndcg@10'] <= 1 and m['n_users'] == len(light_users(data))


def test_joint_loss_and_gradient_split():
    torch.manual_seed(0)
    net = MultiTaskModel(4, 6, torch.randn(6, 8), 'text+id', dim=4)
    users, x = torch.arange(4), (torch.rand(4, 6) < 0.5).float()
    held, r = (torch.rand(4, 6) < 0.3).float() * (1 - x), torch.randint(1, 6, (4, 6)).float()
    held[:, 0] = 1 - x[:, 0]
    losses = task_losses(net, users, x, held, r)
    w = {'rating': 0.7, 'rank': 0.2}
    assert torch.isclose(joint_loss(losses, w), 0.7 * losses['rating'] + 0.2 * losses['rank'])
    groups = net.head_parameters()
    for zero, other in (('rating', 'rank'), ('rank', 'rating')):
        net.zero_grad()
        joint_loss(task_losses(net, users, x, held, r), {zero: 0.0, other: 1.0}).backward()
        assert all(p.grad is None or not p.grad.any() for p in groups[zero])      # a head with weight 0 learns nothing
        assert any(p.grad is not None and p.grad.any() for p in groups[other])
        assert any(p.grad is not None and p.grad.any() for p in groups['shared'])


def test_ranking_only_leaves_rating_head_untouched(data):
    m = MultiTaskRecommender(item_repr='id', w_rating=0.0, w_rank=1.0, **FAST).fit(data)
    assert not m.net.user_bias.weight.any() and not m.net.item_bias.weight.any()
    assert m.net.mean.item() == pytest.approx(data.train['rating'].mean(), rel=1e-6)


def test_save_restore_and_new_items(tiny_bert, data, tmp_path):
    m = MultiTaskRecommender(item_repr='text+id', model=tiny_bert, **FAST).fit(data)
    m.save_state(tmp_path)
    back = MultiTaskRecommender(item_repr='text+id', model=tiny_bert, **FAST)
    back.restore_state(tmp_path, data.dataset.items)
    hist = data.histories('test')[:5]
    np.testing.assert_array_equal(back.predict(data.test), m.predict(data.test))
    np.testing.assert_array_equal(back.score_histories(hist), m.score_histories(hist))
    np.testing.assert_allclose(back.score_text('space rockets'), m.score_text('space rockets'), atol=1e-5)
    new = pd.DataFrame({'item_id': [10_001], 'title': ['Galaxy of the Rocket'], 'year': [2001], 'genres': ['Space']})
    back.add_items(new)
    assert back.score_histories(hist).shape == (5, data.n_items + 1)
    np.testing.assert_allclose(back.score_histories(hist)[:, :-1], m.score_histories(hist), atol=1e-5)


def test_uncertainty_weights_move(data):
    m = MultiTaskRecommender(item_repr='id', weighting='uncertainty', **{**FAST, 'batch_size': 16}).fit(data)
    assert m.weights.log_vars.detach().abs().max() > 1e-2                  # the learnable log-variances moved
    w = m.task_weights()
    assert w['weight_rank'] < w['weight_rating']                             # the larger loss (the CE) is weighted down
    assert m.history[-1]['weight_rank'] < m.history[0]['weight_rank'] < 1


def test_checkpoint_resume_continues_the_run(data, tmp_path):
    straight = MultiTaskRecommender(item_repr='id', **FAST).fit(data)
    first = MultiTaskRecommender(item_repr='id', **FAST).fit(data, checkpoint=tmp_path/'ck.pt')
    np.testing.assert_array_equal(first.predict(data.test), straight.predict(data.test))   # training is deterministic
    resumed = MultiTaskRecommender(item_repr='id', **FAST).fit(data, checkpoint=tmp_path/'ck.pt')  # nothing left: the state is read back
    np.testing.assert_array_equal(resumed.predict(data.test), straight.predict(data.test))
    assert resumed.history == first.history
    with pytest.raises(DataError, match='other settings'):
        MultiTaskRecommender(item_repr='id', **{**FAST, 'dim': 8}).fit(data, checkpoint=tmp_path/'ck.pt')


def test_sigterm_stops_after_the_epoch_and_the_resume_runs_only_the_rest(data, tmp_path, monkeypatch):
    "SIGTERM during epoch 3: the checkpoint holds 3 epochs, StopRequested exits 143, the resume runs the other 9 and ends identical."
    import os, signal
    from transferrec.core import StopRequested, load_state
    every_epoch = dict(FAST, eval_every=1)   # one validation per epoch: counting them counts the epochs run
    straight = MultiTaskRecommender(item_repr='id', **every_epoch).fit(data)
    epochs_run, evaluate = [], MultiTaskRecommender.evaluate
    def counted(self, *args, **kw):
        epochs_run.append(1)
        if len(epochs_run) == 3 and not resuming: os.kill(os.getpid(), signal.SIGTERM)   # arrives before epoch 3 is saved
        return evaluate(self, *args, **kw)
    monkeypatch.setattr(MultiTaskRecommender, 'evaluate', counted)
    resuming, ck = False, tmp_path/'ck.pt'
    with pytest.raises(StopRequested) as stop: MultiTaskRecommender(item_repr='id', **every_epoch).fit(data, checkpoint=ck)
    assert stop.value.exit_code == 143 and 'after epoch 3 of 12' in str(stop.value) and load_state(ck, 'checkpoint')['epoch'] == 3
    resuming, epochs_run[:] = True, []
    resumed = MultiTaskRecommender(item_repr='id', **every_epoch).fit(data, checkpoint=ck)
    assert len(epochs_run) == FAST['epochs'] - 3
    np.testing.assert_array_equal(resumed.predict(data.test), straight.predict(data.test))
