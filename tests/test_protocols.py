"The evaluation protocol itself: the seen-items policies, the aggregation over seeds, and that no choice reads the test part."
from functools import partial
import numpy as np
import pandas as pd
import pytest

from transferrec.core import DataError
from transferrec.data import Split, split, synthetic
from transferrec.baselines import EASE, Pop
from transferrec.benchmark import (SEEN_POLICIES, benchmark_seeds, blind_to_test, mean_sd, protocol_metrics, replace_test,
                                   seed_summary)
from transferrec.recommend import Recommender


class Fixed:
    "Scores given by hand, the same for every user: item 0 highest, then item 1, ..."
    def __init__(self, seed: int=0): self.seed = seed
    def fit(self, spl): self.n_items = spl.n_items; return self
    def score(self, users, on='test'): return np.tile(np.arange(self.n_items, 0, -1, dtype=np.float32), (len(users), 1))


def hand_split(n_items=5):
    "Two users. User 0 has seen items 0 and 2, holds out item 1; user 1 has seen item 3, holds out item 0."
    ds = synthetic(n_users=2, n_items=n_items, interactions_per_user=2, seed=0)
    rows = lambda pairs: pd.DataFrame(pairs or {'user_idx': [], 'item_idx': []}, dtype='int64') if not pairs else \
        pd.DataFrame({'user_idx': [u for u, _ in pairs], 'item_idx': [i for _, i in pairs]}, dtype='int64')
    return Split(ds, train=rows([(0, 0), (1, 3)]), valid=rows([(0, 2)]), test=rows([(0, 1), (1, 0)]), protocol='loo', seed=0)


def test_keep_and_exclude_differ_on_a_hand_example():
    """User 0: items 0 and 2 are seen; ranked 0 > 1 > 2 > ..., the target item 1 is first once 0 is removed (exclude) and
    second when 0 stays (keep). User 1: the target 0 is first either way. So hit@1 is 1 under exclude and 1/2 under keep;
    ndcg@2 under keep is (1/log2(3) + 1) / 2."""
    spl = hand_split()
    m = Fixed().fit(spl)
    exclude, keep = (protocol_metrics(m, spl, k=2, seen=s) for s in ('exclude', 'keep'))
    assert exclude['hit@2'] == keep['hit@2'] == 1.0
    assert exclude['ndcg@2'] == pytest.approx(1.0)
    assert keep['ndcg@2'] == pytest.approx((1 / np.log2(3) + 1) / 2)
    assert protocol_metrics(m, spl, k=1, seen='exclude')['hit@1'] == 1.0
    assert protocol_metrics(m, spl, k=1, seen='keep')['hit@1'] == 0.5
    with pytest.raises(DataError, match="choose one of"): protocol_metrics(m, spl, seen='ignore')


def test_both_policies_come_from_one_fit():
    "benchmark_seeds fits once per seed and measures under both policies: fit_seconds is shared, the metrics are the hand ones."
    runs = benchmark_seeds(hand_split(), models={'fixed': Fixed}, k=1, seeds=[0], progress=False)
    assert list(runs.index) == [(0, 'exclude', 'fixed'), (0, 'keep', 'fixed')]
    assert runs['hit@1'].tolist() == [1.0, 0.5]
    assert runs['fit_seconds'].nunique() == 1


def test_seed_summary_on_known_inputs():
    idx = pd.MultiIndex.from_tuples([(s, p, m) for s in (0, 1, 2) for p in SEEN_POLICIES for m in ('a', 'b')],
                                    names=['seed', 'seen', 'model'])
    vals = {('exclude', 'a'): [0.1, 0.2, 0.3], ('keep', 'a'): [0.05, 0.05, 0.05],
            ('exclude', 'b'): [1.0, 2.0, 4.0], ('keep', 'b'): [0.0, 0.0, 3.0]}
    runs = pd.DataFrame({'ndcg@10': [vals[p, m][s] for s, p, m in idx], 'fit_seconds': 1.0}, index=idx)
    summ = seed_summary(runs)
    assert list(summ.index) == [('exclude', 'a'), ('exclude', 'b'), ('keep', 'a'), ('keep', 'b')]
    assert summ.loc[('exclude', 'a'), ('ndcg@10', 'mean')] == pytest.approx(0.2)
    assert summ.loc[('exclude', 'a'), ('ndcg@10', 'sd')] == pytest.approx(0.1)             # sample sd, ddof 1
    assert summ.loc[('exclude', 'b'), ('ndcg@10', 'sd')] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert summ.loc[('keep', 'b'), ('ndcg@10', 'mean')] == pytest.approx(1.0)
    assert summ.loc[('keep', 'a'), ('ndcg@10', 'sd')] == pytest.approx(0.0)
    assert (summ.xs('n', axis=1, level=1) == 3).all().all()
    assert mean_sd(summ).loc[('exclude', 'a'), 'ndcg@10'] == '0.2000 ± 0.1000'
    with pytest.raises(DataError, match='indexed by \\(seed, seen, model\\)'): seed_summary(runs.reset_index())
    with pytest.raises(DataError, match='are not columns'): seed_summary(runs, ['auc'])


class SeedScore(Fixed):
    "A model whose ranking depends on its seed: seed 0 ranks the targets first, others put them last."
    def score(self, users, on='test'):
        s = super().score(users, on)
        return s if self.seed == 0 else s[:, ::-1].copy()


def test_seeds_reach_the_models_and_the_summary_matches_the_rows():
    runs = benchmark_seeds(hand_split(), models={'s': SeedScore}, k=1, seeds='0,1,2', seen='exclude', progress=False)
    per_seed = runs.xs(('exclude', 's'), level=['seen', 'model'])['hit@1']
    assert per_seed.loc[0] == 1.0 and per_seed.loc[1] == per_seed.loc[2] < 1.0
    summ = seed_summary(runs, ['hit@1'])
    assert summ.loc[('exclude', 's'), ('hit@1', 'mean')] == pytest.approx(per_seed.mean())
    assert summ.loc[('exclude', 's'), ('hit@1', 'sd')] == pytest.approx(per_seed.std(ddof=1))


@pytest.mark.parametrize('bad, match', [([EASE()], 'needs names, classes or factories'), ('x', 'seeds must be integers'),
                                        ([], 'non-empty list'), ([0, 0], 'distinct')])
def test_benchmark_seeds_bad_input(bad, match):
    models, seeds = (bad, [0]) if isinstance(bad, list) and bad and not isinstance(bad[0], int) else (['pop'], bad)
    with pytest.raises(DataError, match=match): benchmark_seeds(hand_split(), models=models, seeds=seeds, progress=False)


# ---------------------------------------------------------------- no choice reads the test part

class Peeking(Pop):
    "Pop with a bonus on the held-out test items at scoring time."
    def fit(self, spl): self.spl = spl; return super().fit(spl)
    def score(self, users, on='test'): return super().score(users, on) + self.spl.matrix('test')[users].toarray()


class SelectsOnTest(Pop):
    "A selection routine: of the configurations 'Pop plus a bonus on item j', it keeps the j with most hits on `part`."
    part = 'test'
    def fit(self, spl):
        super().fit(spl)
        self.j = int(np.asarray(spl.matrix(self.part).sum(0)).ravel().argmax()); return self
    def score(self, users, on='test'):
        s = super().score(users, on); s[:, self.j] += 1e3; return s


class SelectsOnValid(SelectsOnTest):
    "The same routine reading the valid part: allowed."
    part = 'valid'


@pytest.fixture(scope='module')
def small_loo():
    return split(synthetic(n_users=80, n_items=60, interactions_per_user=12, seed=4), 'loo')


def test_replace_test_moves_every_test_row_off_seen_items(small_loo):
    other = replace_test(small_loo)
    assert len(other.test) == len(small_loo.test)
    assert other.matrix('test').multiply(small_loo.seen('test')).nnz == 0
    assert (other.test['item_idx'].to_numpy() != small_loo.test['item_idx'].to_numpy()).all()
    pd.testing.assert_frame_equal(other.valid, small_loo.valid)


def test_a_model_that_reads_the_test_part_is_caught(small_loo):
    assert not blind_to_test(Peeking, small_loo)
    assert not blind_to_test(SelectsOnTest, small_loo)
    assert blind_to_test(SelectsOnValid, small_loo)


@pytest.mark.parametrize('name', ['pop', 'itemknn', 'ease', 'sequential-id', 'two-tower'])
def test_models_and_their_early_stopping_do_not_read_the_test_part(name, small_loo, tiny_bert):
    "The registered models, including the ones that select an epoch on the valid part, are blind to the test part."
    factory = {'sequential-id': partial(Recommender, 'sequential', item_repr='id', epochs=4, patience=1, dim=16, max_len=10,
                                        progress=False),
               'two-tower': partial(Recommender, 'two-tower', model=tiny_bert, history_items=5, user_max_length=32,
                                    item_max_length=16, batch_size=32, max_steps=10, eval_steps=5, lr=2e-3, patience=1,
                                    warmup_steps=0, num_threads=1, progress=False)}.get(name, name)
    assert blind_to_test(factory, small_loo, atol=1e-4)


# ---------------------------------------------------------------- the loo comparison is rendered from the records

from pathlib import Path
import copy, json
from transferrec.benchmark import loo_comparison, seeds_record

PUBLISHED = Path(__file__).parent.parent/'benchmarks'/'published.json'


def hand_record():
    "A seeds record of two models over three seeds, both policies, values chosen by hand."
    run = lambda s: {'seed': s,
                     'results': {'ease': {'ndcg@10': 0.07 + s / 100, 'recall@10': 0.14}, 'seq': {'ndcg@10': 0.1, 'recall@10': 0.2}},
                     'results_keep': {'ease': {'ndcg@10': 0.007, 'recall@10': 0.018}, 'seq': {'ndcg@10': 0.05 + s / 100, 'recall@10': 0.12}}}
    return {'protocol': 'loo', 'seeds': [0, 1, 2], 'runs': [run(s) for s in (0, 1, 2)]}


def test_published_record_names_source_and_protocol_of_every_row():
    pub = json.loads(PUBLISHED.read_text())
    assert len(pub['rows']) == 4
    for r in pub['rows']:
        assert r['protocol'] == 'loo' and r['seen'] == 'keep' and r['source'] and r['name']
        assert 0 < r['ndcg@10'] < r['recall@10'] < 1


def test_loo_comparison_is_rendered_from_the_records():
    pub, rec = json.loads(PUBLISHED.read_text()), hand_record()
    t = loo_comparison(pub, rec)
    names = [r['name'] for r in pub['rows']]
    assert list(t.index) == names + ['ease', 'seq']
    assert all(t.loc[n, ('', 'kind')].startswith('published: ') and 'seen keep' in t.loc[n, ('', 'kind')] for n in names)
    assert (t.loc[names, ('exclude', 'ndcg@10')] == '—').all()            # never measured that way
    assert t.loc['seq', ('keep', 'ndcg@10')] == '0.0600 ± 0.0100'
    assert t.loc['ease', ('exclude', 'ndcg@10')] == '0.0800 ± 0.0100'
    assert t.loc[names[1], ('keep', 'ndcg@10')] == f"{pub['rows'][1]['ndcg@10']:.4f}"
    edited = copy.deepcopy(pub); edited['rows'][1]['ndcg@10'] = 0.0777           # a published number edited
    e = loo_comparison(edited, rec)
    assert e.loc[names[1], ('keep', 'ndcg@10')] == '0.0777' and int((e != t).values.sum()) == 1
    rec2 = copy.deepcopy(rec); rec2['runs'][2]['results_keep']['seq']['recall@10'] = 0.3   # one seed of ours edited
    e = loo_comparison(pub, rec2)
    assert e.loc['seq', ('keep', 'recall@10')] != t.loc['seq', ('keep', 'recall@10')] and int((e != t).values.sum()) == 1


def test_loo_comparison_needs_both_policies(tmp_path):
    old = hand_record()
    for run in old['runs']: del run['results_keep']
    with pytest.raises(DataError, match="no 'results_keep'"): loo_comparison(PUBLISHED, old)
    with pytest.raises(DataError, match='not found'): loo_comparison(tmp_path/'missing.json', hand_record())


def test_seeds_record_round_trips_a_benchmark_seeds_table():
    runs = benchmark_seeds(hand_split(), models={'fixed': Fixed}, k=1, seeds=[0, 1], progress=False)
    rec = seeds_record(runs)
    assert rec['seeds'] == [0, 1] and rec['seen'] == {'results': 'exclude', 'results_keep': 'keep'}
    assert rec['runs'][1]['results']['fixed']['hit@1'] == 1.0 and rec['runs'][1]['results_keep']['fixed']['hit@1'] == 0.5
    assert json.loads(json.dumps(rec)) == rec
