"""Tests of transferrec.metrics: metrics against hand examples and scikit-learn, the evaluator's guards,
the baselines on real and synthetic data, and the benchmark table."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score

from transferrec.core import DataError
from transferrec.data import load_movielens, split, synthetic
from transferrec.baselines import BASELINES, BPR, EASE, ItemKNN, Pop, Random
from transferrec.benchmark import BENCH_METRICS, benchmark, benchmark_json, get_model, plot_benchmark
from transferrec.metrics import METRICS, ScoreMatrix, classification_metrics, evaluate, hit_metrics, rank_metrics, rating_metrics, topk


@pytest.fixture(scope="module")
def syn_split():
    return split(synthetic(n_users=200, n_items=300, seed=0), "random", seed=0)


@pytest.fixture(scope="module")
def ml_random():
    return split(load_movielens("ml-100k"), "random", seed=0)


# ---- metrics ---------------------------------------------------------------------------------------------------

def test_hand_example_all_metrics():
    # relevant items at ranks 1 and 3 of the top 5, three relevant in all
    r = hit_metrics(np.array([[1, 0, 1, 0, 0]], bool), [3], k=5)
    assert r["recall"][0] == pytest.approx(2 / 3)
    assert r["precision"][0] == pytest.approx(2 / 5)
    assert r["hit"][0] == 1.0
    assert r["mrr"][0] == 1.0
    dcg = 1 / np.log2(2) + 1 / np.log2(4)
    idcg = 1 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(4)
    assert r["ndcg"][0] == pytest.approx(dcg / idcg)
    assert r["map"][0] == pytest.approx((1 / 1 + 2 / 3) / 3)


def test_ideal_dcg_and_map_are_capped_at_k():
    # 12 relevant items, all of the top 10 hit: ndcg and map are 1, recall is 10/12 (RecBole's definition)
    r = hit_metrics(np.ones((1, 10), bool), [12], k=10)
    assert r["ndcg"][0] == pytest.approx(1.0)
    assert r["map"][0] == pytest.approx(1.0)
    assert r["recall"][0] == pytest.approx(10 / 12)
    assert r["precision"][0] == pytest.approx(1.0)


def test_rank_metrics_from_scores_by_hand():
    scores = np.array([[0.9, 0.1, 0.8, 0.3, 0.2]])
    relevant = np.array([[0, 0, 0, 1, 1]])          # ranking 0, 2, 3, 4, 1: hits at ranks 3 and 4
    r = rank_metrics(scores, relevant, k=[3, 5], metrics=["mrr", "ndcg", "recall"])
    assert r["mrr@3"][0] == pytest.approx(1 / 3)
    assert r["recall@3"][0] == pytest.approx(0.5)
    assert r["recall@5"][0] == pytest.approx(1.0)
    assert r["ndcg@5"][0] == pytest.approx((1 / np.log2(4) + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_ndcg_matches_sklearn_single_target(k):
    rng = np.random.default_rng(k)
    scores = rng.normal(size=(100, 40))
    rel = np.zeros((100, 40), int)
    rel[np.arange(100), rng.integers(0, 40, 100)] = 1
    ours = np.mean(rank_metrics(scores, rel, k, metrics="ndcg")[f"ndcg@{k}"])
    assert ours == pytest.approx(ndcg_score(rel, scores, k=k), abs=1e-10)
    # single target: hit@k equals recall@k and mrr is the reciprocal rank
    r = rank_metrics(scores, rel, k)
    np.testing.assert_allclose(r[f"hit@{k}"], r[f"recall@{k}"])
    rank = (scores > scores[rel.astype(bool)][:, None]).sum(1) + 1
    np.testing.assert_allclose(r[f"mrr@{k}"], np.where(rank <= k, 1 / rank, 0))


def test_ndcg_matches_sklearn_many_targets():
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(80, 50))
    rel = (rng.random((80, 50)) < 0.2).astype(int)
    rel[:, 3] = 1
    ours = np.mean(rank_metrics(scores, rel, 10, metrics="ndcg")["ndcg@10"])
    assert ours == pytest.approx(ndcg_score(rel, scores, k=10), abs=1e-10)


def test_topk_ties_are_deterministic():
    s = np.zeros((2, 6))
    s[1, 4] = 1.0
    np.testing.assert_array_equal(topk(s, 3), [[0, 1, 2], [4, 0, 1]])
    rng = np.random.default_rng(0)
    r = rng.integers(0, 3, size=(50, 100)).astype(np.float32)
    np.testing.assert_array_equal(topk(r, 10), np.argsort(-r, axis=1, kind="stable")[:, :10])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise(bad):
    s = np.random.default_rng(0).normal(size=(3, 8))
    rel = np.eye(3, 8)
    s[1, 1] = bad                                   # the target itself: NaN would otherwise rank 1
    with pytest.raises(DataError, match="finite"):
        rank_metrics(s, rel, 5)


def test_nan_model_raises_in_evaluate(syn_split):
    s = np.random.default_rng(0).normal(size=(syn_split.n_users, syn_split.n_items))
    s[5, :] = np.nan
    with pytest.raises(DataError, match="finite"):
        evaluate(ScoreMatrix(s), syn_split)


def test_seen_items_are_excluded(syn_split):
    seen = syn_split.seen("test").toarray()
    rel = syn_split.matrix("test").toarray()
    # seen items score highest, the test items next: once seen items are excluded the ranking is perfect
    s = 10.0 * seen + rel
    r = evaluate(ScoreMatrix(s), syn_split, k=10)
    assert r["ndcg@10"] == pytest.approx(1.0) and r["mrr@10"] == pytest.approx(1.0)
    assert evaluate(ScoreMatrix(s), syn_split, k=10, exclude_seen=False)["ndcg@10"] < 0.01
    # at validation time only training items are excluded
    assert not np.array_equal(syn_split.seen("valid").toarray(), seen)
    top = topk(np.where(seen > 0, -np.inf, s), 10)
    assert not np.take_along_axis(seen, top, 1).any()


def test_candidates_restrict_the_ranking(syn_split):
    rel = syn_split.matrix("test").toarray()
    s = np.random.default_rng(1).normal(size=rel.shape)
    cand = np.arange(0, syn_split.n_items, 2)
    r = evaluate(ScoreMatrix(s), syn_split, candidates=cand)
    manual = rank_metrics(s, rel, 10, exclude=syn_split.seen("test"), candidates=cand)
    assert r["ndcg@10"] == pytest.approx(np.nanmean(manual["ndcg@10"]))
    assert r["n_users"] == int((rel[:, cand].sum(1) > 0).sum())


def test_evaluate_reports_users_and_skips(syn_split):
    rel = syn_split.matrix("test").toarray()
    r = evaluate(ScoreMatrix(rel), syn_split)
    assert set(r) == {f"{m}@10" for m in METRICS} | {"n_users", "n_skipped"}
    assert r["n_users"] == int((rel.sum(1) > 0).sum())
    assert r["ndcg@10"] == pytest.approx(1.0)
    r = evaluate(ScoreMatrix(rel), syn_split, users=[0, 1, 2], metrics=["ndcg@10", "hit"])
    assert r["n_users"] + r["n_skipped"] == 3 and set(r) == {"ndcg@10", "hit@10", "n_users", "n_skipped"}


def test_evaluate_bad_arguments(syn_split):
    m = ScoreMatrix(np.zeros((syn_split.n_users, syn_split.n_items)))
    with pytest.raises(DataError, match="valid metrics: ndcg"):
        evaluate(m, syn_split, metrics=["ndcg", "auc"])
    for k in (0, -3, 2.5):
        with pytest.raises(DataError, match="positive"):
            evaluate(m, syn_split, k=k)
    with pytest.raises(DataError, match="on must be"):
        evaluate(m, syn_split, on="train")
    with pytest.raises(DataError, match="shape"):
        evaluate(ScoreMatrix(np.zeros((syn_split.n_users, 3))), syn_split)


def test_evaluate_accepts_torch_scores(syn_split):
    import torch
    rel = syn_split.matrix("test").toarray()

    class T:
        def score(self, u, on='test'): return torch.tensor(rel[u])
    assert evaluate(T(), syn_split)["hit@10"] == pytest.approx(1.0)


def test_classification_and_rating_metrics():
    r = classification_metrics([0, 1, 1, 0], [0.1, 0.8, 0.25, 0.3])
    assert r["auc"] == pytest.approx(0.75) and r["accuracy"] == pytest.approx(0.75)
    assert classification_metrics([0, 1], [0.0, 0.0], from_logits=True)["logloss"] == pytest.approx(np.log(2))
    with pytest.raises(DataError):
        classification_metrics([0, 1], [np.nan, 0.5])
    r = rating_metrics([5, 3, 1], [4, 3, 3])
    assert r["rmse"] == pytest.approx(np.sqrt(5 / 3)) and r["mae"] == pytest.approx(1.0)


# ---- baselines -------------------------------------------------------------------------------------------------

def test_registry_and_unknown_model():
    assert {"pop", "itemknn", "ease", "bpr"} <= set(BASELINES)
    assert isinstance(get_model("Pop"), Pop)
    with pytest.raises(DataError, match="valid models:.*ease"):
        get_model("nope")
    with pytest.raises(DataError, match="valid models"):
        benchmark(synthetic(n_users=30, n_items=40), "random", ["pop", "nope"], progress=False)


def test_unfitted_model_raises():
    with pytest.raises(DataError, match="fit"):
        Pop().score([0])


def test_ease_beats_pop_on_ml100k(ml_random):
    pop = evaluate(Pop().fit(ml_random), ml_random)
    ease = EASE().fit(ml_random)
    res = evaluate(ease, ml_random)
    assert ease.lambda_fitted_ in ease.grid
    assert res["ndcg@10"] > pop["ndcg@10"] + 0.1          # about 0.32 vs 0.14
    assert res["recall@10"] > pop["recall@10"]
    assert res["n_users"] == 943


def test_itemknn_and_pop_on_synthetic(syn_split):
    rnd = evaluate(Random().fit(syn_split), syn_split)["ndcg@10"]
    for model in (Pop(), ItemKNN(k=50), EASE(lambda_=100.0)):
        assert evaluate(model.fit(syn_split), syn_split)["ndcg@10"] > 2 * rnd


def test_bpr_trains_and_beats_random(syn_split):
    bpr = BPR(epochs=25, lr=1e-2, seed=0, progress=False).fit(syn_split)
    assert bpr.history_[-1]["loss"] < bpr.history_[0]["loss"]
    ndcg = evaluate(bpr, syn_split)["ndcg@10"]
    rnd = evaluate(Random().fit(syn_split), syn_split)["ndcg@10"]
    assert ndcg > 2 * rnd
    again = BPR(epochs=2, lr=1e-2, seed=0, progress=False).fit(syn_split).score([0, 1])
    np.testing.assert_allclose(again, BPR(epochs=2, lr=1e-2, seed=0, progress=False).fit(syn_split).score([0, 1]),
                               rtol=1e-6)


def test_bpr_early_stopping(syn_split):
    "Patience counts epochs without a better validation NDCG; None or 0 never stops; the best epoch's embeddings are kept."
    short = BPR(epochs=30, lr=1e-2, patience=1, seed=0, progress=False).fit(syn_split)
    curve = [h["valid_ndcg@10"] for h in short.history_]
    assert len(curve) < 30 and curve[-1] <= max(curve[:-1])                 # stopped at the first epoch without improvement
    assert short.best_epoch_ == 1 + int(np.argmax(curve))
    for patience in (None, 0):
        assert len(BPR(epochs=3, lr=1e-2, patience=patience, seed=0, progress=False).fit(syn_split).history_) == 3


# ---- benchmark -------------------------------------------------------------------------------------------------

def test_benchmark_columns_and_json(tmp_path):
    ds = synthetic(n_users=60, n_items=80, seed=1)
    df = benchmark(ds, "random", ["pop", "ease"], k=5, progress=False)
    assert list(df.index) == ["pop", "ease"]
    assert list(df.columns) == [f"{m}@5" for m in BENCH_METRICS] + ["fit_seconds", "eval_seconds"]
    js = benchmark_json(df, "synthetic", "random", 5)
    assert js["dataset"] == "synthetic" and js["protocol"] == "random" and js["k"] == 5
    assert set(js["results"]["pop"]) == set(df.columns)
    import json
    json.dumps(js)
    ax = plot_benchmark(df, "ndcg@5")
    assert len(ax.patches) == 2
    with pytest.raises(DataError, match="choose one of"):
        plot_benchmark(df, "auc")


def test_benchmark_cold_has_held_out_columns():
    ds = synthetic(n_users=60, n_items=80, seed=1)
    df = benchmark(ds, "cold", {"pop": Pop(), "rnd": Random(seed=3)}, progress=False)
    assert {f"{m}@10_cold" for m in BENCH_METRICS} <= set(df.columns)
    assert df.loc["pop", "ndcg@10_cold"] <= 1.0 and df.loc["rnd", "hit@10_cold"] > 0


def test_a_huge_k_costs_no_memory_and_equals_the_whole_catalogue():
    "k beyond the catalogue is the whole catalogue: k=10**9 under a 3 GB address-space limit gives the values of k=n_items."
    import subprocess, sys, json as js
    code = ("import resource, json; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
            "from transferrec.data import synthetic, split\nfrom transferrec.baselines import Pop\n"
            "from transferrec.metrics import evaluate, METRICS\n"
            "s = split(synthetic(seed=0), 'random', seed=0)\n"
            "print(json.dumps(evaluate(Pop().fit(s), s, k=[s.n_items, 10**9], metrics=list(METRICS))))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = js.loads(r.stdout.strip().splitlines()[-1])
    n = max(int(k.split('@')[1]) for k in out if '@' in k and not k.endswith('@1000000000'))
    for m in ('ndcg', 'recall', 'mrr', 'hit', 'map'):
        assert out[f'{m}@1000000000'] == pytest.approx(out[f'{m}@{n}'], abs=1e-12), m
