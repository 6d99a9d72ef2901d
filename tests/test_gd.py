"Tests of transferrec.gd: losses and gradients, the loop against torch.optim, schedules against transformers, divergence."
import math, os, pickle, subprocess, sys
from functools import partial

import numpy as np
import pytest
import torch

os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

from transferrec.gd import DivergenceError, GDResult, bce, bce_grad, check_gradients, gradient_descent, least_squares, lr_schedule, make_least_squares, mf_init, mf_loss_grad, mf_loss_torch, mf_predict, minibatches, mse, mse_grad, plot_contour, plot_histories, plot_lr_schedule, plot_sweep, rmse, sigmoid, softmax, softmax_ce, softmax_ce_grad, warmup_steps_of

F = torch.nn.functional


def test_imports_without_nbdev():
    code = ("import sys\n"
            "for m in ('nbdev', 'execnb', 'fastcore', 'transformers', 'scipy'): sys.modules[m] = None\n"
            "import transferrec.gd as g\n"
            "assert g.gradient_descent and g.lr_schedule and g.DivergenceError\n")
    env = {**os.environ, 'MPLBACKEND': 'Agg'}
    subprocess.run([sys.executable, '-c', code], check=True, env=env, timeout=120)


@pytest.fixture(scope='module')
def rng(): return np.random.default_rng(0)


def _torch_value_grad(fn, z, y):
    zt = torch.tensor(z, requires_grad=True)
    L = fn(zt, torch.tensor(y)); L.backward()
    return L.item(), zt.grad.numpy()


def test_losses_and_gradients_match_torch(rng):
    z, y = rng.normal(size=20) * 4, rng.integers(0, 2, 20).astype(float)
    v, g = _torch_value_grad(F.binary_cross_entropy_with_logits, z, y)
    assert abs(bce(z, y) - v) < 1e-12 and np.abs(bce_grad(z, y) - g).max() < 1e-14
    p, t = rng.normal(size=20) + 3, rng.integers(1, 6, 20).astype(float)
    v, g = _torch_value_grad(F.mse_loss, p, t)
    assert abs(mse(p, t) - v) < 1e-12 and np.abs(mse_grad(p, t) - g).max() < 1e-14
    Z, Y = rng.normal(size=(20, 7)) * 4, rng.integers(0, 7, 20)
    v, g = _torch_value_grad(F.cross_entropy, Z, Y)
    assert abs(softmax_ce(Z, Y) - v) < 1e-12 and np.abs(softmax_ce_grad(Z, Y) - g).max() < 1e-14
    np.testing.assert_allclose(softmax(Z).sum(1), 1.0)


def test_losses_are_stable_far_out():
    assert np.isfinite(bce(np.array([1000.0, -1000.0]), np.array([1.0, 0.0])))
    assert bce(np.array([1000.0, -1000.0]), np.array([1.0, 0.0])) == 0.0
    assert math.isclose(bce(np.array([800.0]), np.array([0.0])), 800.0)
    np.testing.assert_allclose(sigmoid(np.array([-800.0, 0.0, 800.0])), [0.0, 0.5, 1.0])
    assert np.isfinite(softmax_ce(np.array([[1000.0, -1000.0, 0.0]]), np.array([1])))


def test_two_class_softmax_is_binary_ce(rng):
    Z, y = rng.normal(size=(10, 2)), rng.integers(0, 2, 10)
    assert math.isclose(softmax_ce(Z, y), bce(Z[:, 1] - Z[:, 0], y), rel_tol=1e-12)
    np.testing.assert_allclose(softmax_ce_grad(Z, y)[:, 1], bce_grad(Z[:, 1] - Z[:, 0], y), atol=1e-15)


@pytest.fixture(scope='module')
def mf_data():
    rng = np.random.default_rng(1)
    n_users, n_items, n = 60, 80, 2000
    u, i = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    r = np.clip(np.round(3.5 + rng.normal(size=n)), 1, 5)
    return n_users, n_items, u, i, r


def test_mf_gradient_check_autograd_and_finite_differences(mf_data):
    n_users, n_items, u, i, r = mf_data
    lg, theta = mf_loss_grad(u, i, r), mf_init(n_users, n_items, k=5, mean=r.mean(), seed=3)
    for batch in (None, np.arange(100)):
        d = check_gradients(lg, theta, mf_loss_torch(u, i, r), batch=batch)
        assert set(d) == {'loss', 'mu', 'bu', 'bi', 'P', 'Q'} and max(d.values()) < 1e-12, d
    d = check_gradients(lg, theta, batch=np.arange(300))
    assert max(d.values()) < 1e-7, d
    # a wrong gradient is caught
    def wrong(th, b=None):
        loss, g = lg(th, b); g['P'] = 2 * g['P']; return loss, g
    assert check_gradients(wrong, theta, mf_loss_torch(u, i, r))['P'] > 1e-5
    assert check_gradients(wrong, theta)['P'] > 1e-5
    # prediction matches the loss
    lg_loss, _ = lg(theta)
    assert math.isclose(lg_loss, np.mean((mf_predict(theta, u, i) - r) ** 2))
    assert rmse(theta, u, i, r, clip=None) == pytest.approx(math.sqrt(lg_loss))


def test_least_squares_converges_to_closed_form():
    X, y = make_least_squares(n=150, d=6, condition=30, seed=2)
    H = 2 * X.T @ X / len(y)
    lam = np.linalg.eigvalsh(H)
    assert lam.min() == pytest.approx(1.0) and lam.max() == pytest.approx(30.0)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    res = gradient_descent(least_squares(X, y), np.zeros(6), lr=2 / (lam.max() + lam.min()), steps=500, record_path=True)
    assert isinstance(res, GDResult) and len(res.history) == 500 and res.path.shape == (501, 6)
    np.testing.assert_allclose(res.theta, w_star, atol=1e-8)
    rho = (30 - 1) / (30 + 1)
    err = np.linalg.norm(res.path - w_star, axis=1)
    assert (err[1:100] <= rho ** np.arange(1, 100) * err[0] * (1 + 1e-9)).all()
    assert (np.diff(res.history.loss.to_numpy()[:100]) < 1e-12).all()   # every step lowers the loss (up to rounding)


def test_condition_number_slows_convergence():
    steps = []
    for kappa in (2, 20, 200):
        X, y = make_least_squares(n=100, d=4, condition=kappa, seed=0)
        w_star = np.linalg.lstsq(X, y, rcond=None)[0]
        res = gradient_descent(least_squares(X, y), np.zeros(4), lr=2 / (kappa + 1), steps=3000, record_path=True)
        steps.append(int(np.argmax(np.linalg.norm(res.path - w_star, axis=1) < 1e-6 * np.linalg.norm(w_star))))
    assert 0 < steps[0] < steps[1] < steps[2]


def test_divergence_error():
    X, y = make_least_squares(n=100, d=3, condition=10, seed=0)
    with pytest.raises(DivergenceError) as info:
        gradient_descent(least_squares(X, y), np.zeros(3), lr=0.25, steps=500)   # 2/lambda_max = 0.2
    e = info.value
    assert isinstance(e, ValueError) and e.step > 0 and e.lr == 0.25
    msg = str(e)
    assert f'step {e.step}' in msg and 'loss=' in msg and 'Lower the learning rate' in msg
    assert len(e.history) == e.step and e.history.loss.iloc[-1] < e.loss
    assert pickle.loads(pickle.dumps(e)).step == e.step
    with pytest.raises(DivergenceError, match='not finite|no longer finite'):
        gradient_descent(lambda w, b: (float(w[0]) if abs(w[0]) < 10 else float('inf'), -np.ones(1)), np.zeros(1), lr=5.0, steps=5,
                         max_growth=None)
    with pytest.raises(DivergenceError, match='starting point'):
        gradient_descent(lambda w, b: (float('nan'), w), np.zeros(2))
    with pytest.raises(ValueError, match='optimizer'):
        gradient_descent(least_squares(X, y), np.zeros(3), optimizer='lbfgs')
    with pytest.raises(ValueError, match='lr must be positive'):
        gradient_descent(least_squares(X, y), np.zeros(3), lr=0)
    with pytest.raises(ValueError, match='not parameters'):
        gradient_descent(least_squares(X, y), np.zeros(3), weight_decay={'W': 0.1})


def test_theta0_is_not_modified(mf_data):
    n_users, n_items, u, i, r = mf_data
    theta = mf_init(n_users, n_items, k=3, mean=r.mean())
    before = {k: v.copy() for k, v in theta.items()}
    gradient_descent(mf_loss_grad(u, i, r), theta, lr=0.1, steps=5, optimizer='adamw', weight_decay=0.1)
    for k in theta: np.testing.assert_array_equal(theta[k], before[k])


def test_minibatches_cover_each_epoch():
    it = minibatches(103, 10, seed=0)
    epoch = np.concatenate([next(it) for _ in range(11)])
    assert sorted(epoch) == list(range(103))
    assert len(next(it)) == 10


def _torch_run(theta0, u, i, r, opt_cls, steps, lr_fn, clip, **kw):
    tl, tt = mf_loss_torch(u, i, r), {k: torch.tensor(v, requires_grad=True) for k, v in theta0.items()}
    opt = opt_cls(tt.values(), lr=1.0, **kw)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_fn)
    batches, losses = minibatches(len(r), 64, seed=5), []
    for _ in range(steps):
        opt.zero_grad(); L = tl(tt, torch.tensor(next(batches))); L.backward(); losses.append(L.item())
        if clip: torch.nn.utils.clip_grad_norm_(list(tt.values()), clip)
        opt.step(); sched.step()
    return np.array(losses), {k: v.detach().numpy() for k, v in tt.items()}


@pytest.mark.parametrize('ours,theirs,lr,clip', [
    (dict(), (torch.optim.SGD, dict()), 0.3, None),
    (dict(momentum=0.9, weight_decay=0.01), (torch.optim.SGD, dict(momentum=0.9, weight_decay=0.01)), 0.1, None),
    (dict(optimizer='adam', weight_decay=0.01), (torch.optim.Adam, dict(weight_decay=0.01)), 0.01, None),
    (dict(optimizer='adamw', weight_decay=0.1), (torch.optim.AdamW, dict(weight_decay=0.1)), 0.01, None),
    (dict(optimizer='adamw', weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6),
     (torch.optim.AdamW, dict(weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)), 0.02, 0.02),
    (dict(momentum=0.5), (torch.optim.SGD, dict(momentum=0.5)), 0.3, 0.01),
])
def test_loop_matches_torch_optim(mf_data, ours, theirs, lr, clip):
    n_users, n_items, u, i, r = mf_data
    theta0 = mf_init(n_users, n_items, k=4, mean=r.mean(), seed=0)
    steps = 40
    lr_fn = lambda t: lr * min(1.0, (t + 1) / 8)
    res = gradient_descent(mf_loss_grad(u, i, r), theta0, lr=lr_fn, steps=steps, batches=minibatches(len(r), 64, seed=5),
                           max_grad_norm=clip, **ours)
    losses, th = _torch_run(theta0, u, i, r, theirs[0], steps, lr_fn, clip, **theirs[1])
    np.testing.assert_allclose(res.history.loss.to_numpy(), losses, rtol=0, atol=1e-12)
    for k in th: np.testing.assert_allclose(res.theta[k], th[k], rtol=0, atol=1e-12)
    assert max(np.abs(res.theta[k] - theta0[k]).max() for k in th) > 1e-3   # it did move
    if clip: assert (res.history.grad_norm > clip).any()                      # clipping was exercised


def test_lr_schedule_matches_transformers(tmp_path):
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup, TrainingArguments)
    def hf(make, T, lr, W):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        s = make(opt, W) if make is get_constant_schedule_with_warmup else make(opt, W, T)
        out = []
        for _ in range(T + 3): out.append(opt.param_groups[0]['lr']); opt.step(); s.step()
        return np.array(out)
    for T, W in [(100, 10), (100, 0), (37, 0.1), (10, 10), (250, 0.06), (1, 0)]:
        Wn = warmup_steps_of(T, W)
        args = TrainingArguments(output_dir=str(tmp_path), warmup_steps=W, report_to='none')
        assert args.get_warmup_steps(T) == Wn
        for make, kind in [(get_linear_schedule_with_warmup, 'linear'), (get_cosine_schedule_with_warmup, 'cosine'),
                           (get_constant_schedule_with_warmup, 'constant')]:
            ours = lr_schedule(np.arange(T + 3), T, 3e-4, W, kind)
            np.testing.assert_allclose(ours, hf(make, T, 3e-4, Wn), rtol=1e-12, atol=1e-18)
            assert lr_schedule(0, T, 3e-4, W, kind) == pytest.approx(ours[0]) and isinstance(lr_schedule(1, T, 3e-4, W, kind), float)
    with pytest.raises(ValueError, match='kind'): lr_schedule(0, 10, kind='step')
    with pytest.raises(ValueError, match='warmup'): lr_schedule(0, 10, warmup_steps=-1)


def test_schedule_drives_the_loop():
    X, y = make_least_squares(n=50, d=2, seed=0)
    res = gradient_descent(least_squares(X, y), np.zeros(2), lr=partial(lr_schedule, total_steps=30, lr=0.1, warmup_steps=5), steps=30)
    np.testing.assert_allclose(res.history.lr.to_numpy(), lr_schedule(np.arange(30), 30, 0.1, 5))


def test_trainer_step_is_the_formula(tmp_path):
    "A transformers.Trainer run (AdamW, warmup+linear decay, clipping, accumulation, no decay on biases) equals gradient_descent."
    from transformers import Trainer, TrainingArguments
    rng = np.random.default_rng(0)
    n_users, n_items, n = 30, 40, 128
    u, i = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    r = np.clip(np.round(3.5 + rng.normal(size=n)), 1, 5)
    theta = mf_init(n_users, n_items, k=4, mean=r.mean(), seed=0)

    class TorchMF(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.global_bias, self.user_bias, self.item_bias = (torch.nn.Parameter(torch.tensor(theta[k])) for k in ('mu', 'bu', 'bi'))
            self.user_factors, self.item_factors = (torch.nn.Parameter(torch.tensor(theta[k])) for k in ('P', 'Q'))
        def forward(self, users, items, labels=None):
            pred = (self.global_bias[0] + self.user_bias[users] + self.item_bias[items]
                    + (self.user_factors[users] * self.item_factors[items]).sum(1))
            return {'logits': pred, 'loss': ((pred - labels) ** 2).mean()}

    T, lr, W, wd, clip = 25, 0.05, 0.2, 0.1, 0.15
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=n // 4, gradient_accumulation_steps=4, max_steps=T,
                             learning_rate=lr, warmup_steps=W, weight_decay=wd, max_grad_norm=clip, lr_scheduler_type='linear',
                             optim='adamw_torch', report_to='none', save_strategy='no', logging_strategy='no', disable_tqdm=True,
                             use_cpu=True)
    model = TorchMF()
    data = [{'users': int(a), 'items': int(b), 'labels': float(c)} for a, b, c in zip(u, i, r)]
    Trainer(model=model, args=args, train_dataset=data).train()
    res = gradient_descent(mf_loss_grad(u, i, r), theta, lr=partial(lr_schedule, total_steps=T, lr=lr, warmup_steps=W), steps=T,
                           optimizer='adamw', weight_decay={'P': wd, 'Q': wd}, max_grad_norm=clip)
    assert (res.history.grad_norm > clip).any()
    names = {'mu': 'global_bias', 'bu': 'user_bias', 'bi': 'item_bias', 'P': 'user_factors', 'Q': 'item_factors'}
    for k, name in names.items():
        np.testing.assert_allclose(res.theta[k], getattr(model, name).detach().numpy(), rtol=0, atol=1e-10)


def test_plot_helpers_label_their_axes():
    import matplotlib.pyplot as plt
    X, y = make_least_squares(n=50, d=2, seed=0)
    ls = least_squares(X, y)
    ok = gradient_descent(ls, np.zeros(2), lr=0.1, steps=20, record_path=True)
    try: gradient_descent(ls, np.zeros(2), lr=0.5, steps=50)
    except DivergenceError as e: bad = e
    ax = plot_histories({'ok': ok, 'bad': bad}, xlabel='step', ylabel='loss')
    assert ax.get_xlabel() == 'step' and ax.get_ylabel() == 'loss' and len(ax.get_lines()) == 3   # two curves + the divergence mark
    ax = plot_contour(lambda w: ls(w)[0], {'GD': ok.path}, xlim=(-3, 3), ylim=(-3, 3), optimum=ok.theta)
    assert ax.get_xlabel() and ax.get_ylabel()
    ax = plot_lr_schedule(100, 1e-3, 0.1, kinds=('linear', 'cosine'))
    assert ax.get_xlabel() and ax.get_ylabel() and len(ax.get_lines()) == 3
    import pandas as pd
    df = pd.DataFrame({'weight_decay': [0.0, 0.1, 1.0], 'valid_rmse': [1.0, 0.9, 0.95]})
    ax = plot_sweep(df, 'weight_decay', ['valid_rmse'], best='valid_rmse')
    assert ax.get_xscale() == 'symlog' and ax.get_xlabel() == 'weight_decay'
    plt.close('all')
