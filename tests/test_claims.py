"""The README's headline claims, each checked on a small but real configuration that would fail if the claim were false.

Every test trains the models the README's tables name (`transferrec.benchmark.get_model`) on MovieLens-100k with seed 0,
for a few epochs, and compares them with `protocol_metrics`, the benchmark's own metrics (`_cold` columns rank the new
items among themselves). The comparisons are deterministic for a given code version (seeded, one thread); each margin
was chosen from the spread of the same configuration over several seeds (measured on the 2-core CPU of the records,
torch 2.13), written next to its test: wide enough that a reseeded (or slightly changed) but correct model still
passes, narrow enough that the broken version fails.

Claims and their tests:
- new items (`cold`): text models recommend what ID models cannot: `test_text_beats_id_on_new_items`,
  `test_ease_text_beats_ease_on_new_items`;
- `loo`: text+ID items beat ID items, and the text is what helps: `test_text_and_id_beat_id_on_loo`;
- a pretrained encoder beats a random-init one on new items: `test_pretrained_beats_random_init_on_new_items`;
- `random`: EASE with a pretrained text prior edges out plain EASE: `test_ease_text_edges_out_ease_on_random`;
- seen items: excluding them (our protocol) scores at least as high as ranking them too (RecBole's "repeatable"),
  per user, and much higher for models that score the history itself: `test_excluding_seen_items_only_helps`;
- the README's tables come from these models: at seed 0 the live numbers are the recorded ones
  (benchmarks/transfer-cold.json, transfer-random.json): `test_seed_0_numbers_are_the_recorded_ones`; the
  deterministic baselines (Pop, ItemKNN, EASE on `random` and `loo`) exactly: `test_deterministic_baselines_are_the_recorded_ones`;
- the README's sentences about those tables hold on the records (`cold` over seeds with an interval):
  `test_readme_sentences_hold_on_the_records`;
- `random` is RecBole's default protocol, with its rounding: every user's part sizes are those of RecBole 1.2.1's own
  `_calcu_split_ids`, read from the installed package: `test_random_split_rounds_as_recbole`.

Mutation check (the issue's "deliberately break each claim"): each claim's assertion is a function, and the
`test_*_breaks_*` tests feed it the broken version and require it to fail:
- item text vectors replaced by seeded Gaussian noise: the sequential model on new items
  (`test_noise_text_vectors_break_the_new_item_claim`), EASE's text prior (`test_noise_text_prior_breaks_the_ease_claim`)
  and the text+id model on `loo` (`test_noise_text_vectors_break_the_loo_claim`);
- a random-init encoder where the pretrained one should be (`load_encoder` forced to `pretrained=False`):
  `test_random_init_breaks_the_pretrained_claim`;
- seen items not excluded (`rank_metrics` called without `exclude`): `test_ignoring_exclusion_breaks_the_seen_claim`;
- a recorded number edited in its fourth decimal: `test_an_edited_record_is_caught`; a record edited so that a
  README sentence is false, or the cold-start seeds cut to one: `test_an_edited_record_breaks_a_readme_sentence`;
- a plain rounding in place of RecBole's: the last assertion of `test_random_split_rounds_as_recbole`.
The other claims and their mutations live next to what they test: the rendered tables and the verdicts over seeds
(tests/test_benchmarks.py: a transfer record edited, a seed verdict fed agreeing seeds), the README rendered from
nbs/index.ipynb (tests/test_readme.py), explanations and attributions (tests/test_study.py: reasons replaced by random
history items or removed, attributions zeroed or halved), resuming (tests/test_resume.py: a restart from zero counted;
tests/test_cli_runs.py: the killed run's epochs restored unchanged, which a rerun does not reproduce).

Tried by hand as well (2026-12-02), each mutation reverted after and `git diff` checked:
- benchmarks/results.json, the int8 run's fp32 ndcg@10 of seed 1 edited (0.06427 -> 0.06527):
  test_results_md_is_rendered_from_results_json and test_seed_verdicts_are_computed_from_the_record fail;
- README.md, text+id's loo ndcg@10 edited (0.0971 -> 0.0972): test_readme_is_rendered_from_the_index_notebook fails;
- resume restarting from zero (a scratch pytest plugin: the sequential checkpoint's loop state ignored, the Trainer
  called without `resume_from_checkpoint`): all 7 resume tests of tests/test_resume.py fail on their counts (e.g.
  20 batches run after resuming where 12 were left);
- attributions zeroed and reasons removed (the same plugin: `token_attributions` returning zeros, `because` empty):
  test_integrated_gradients_are_complete and test_explanation_check_small fail;
- item text vectors replaced by seeded noise (the same plugin, `item_vectors`): test_text_beats_id_on_new_items,
  test_pretrained_beats_random_init_on_new_items, test_ease_text_beats_ease_on_new_items and
  test_seed_0_numbers_are_the_recorded_ones fail (the four tests run).

Encoding the 1,682 titles with MiniLM takes about 10 s once; `encode_texts` caches the vectors on disk (in
`$TRANSFERREC_CACHE`, default `~/.cache/transferrec`), so later runs read them. Fitted models are shared by
module-scoped fixtures."""
import ast, importlib.util, json
from pathlib import Path
import numpy as np, pandas as pd
import pytest

import transferrec.encoders
import transferrec.metrics
from transferrec.benchmark import get_model, protocol_metrics
from transferrec.data import from_dataframes, split
from transferrec.metrics import evaluate
from transferrec.records import seed_ci
from transferrec.sequential import item_vectors

SEED = 0
COLD_EPOCHS = 2     # at seed 0 each model's best validation epoch on `cold` is 1 or 2, so these are the numbers of the
                    # recorded full runs (benchmarks/transfer-cold.json), early stopping included
LOO_EPOCHS = 3      # the full `loo` runs take 76-110 s per model (benchmarks/transfer-loo.json): 3 epochs compare the
                    # models at one equal, small budget


def fit(name: str, spl, **options) -> dict:
    "Train the registered model `name` on `spl` with seed 0 and return its benchmark metrics."
    model = get_model(name, seed=SEED, progress=False, **options)
    model.fit(spl)
    return protocol_metrics(model, spl)

def noise_like(vectors: np.ndarray) -> np.ndarray:
    "Seeded Gaussian noise of the shape of `vectors`: item 'text' that says nothing about the item."
    return np.random.default_rng(1000).standard_normal(vectors.shape).astype(np.float32)


@pytest.fixture(scope='module')
def text_vectors(ml100k):
    return item_vectors(ml100k.items, progress=False)

@pytest.fixture(scope='module')
def cold(ml100k): return split(ml100k, 'cold', seed=SEED)

@pytest.fixture(scope='module')
def loo(ml100k): return split(ml100k, 'loo')

@pytest.fixture(scope='module')
def random_split(ml100k): return split(ml100k, 'random', seed=SEED)

@pytest.fixture(scope='module')
def cold_text(cold, text_vectors): return fit('sequential-text', cold, epochs=COLD_EPOCHS, text_vectors=text_vectors)

@pytest.fixture(scope='module')
def cold_id(cold): return fit('sequential-id', cold, epochs=COLD_EPOCHS)

@pytest.fixture(scope='module')
def cold_scratch(cold): return fit('sequential-scratch', cold, epochs=COLD_EPOCHS)


# ---------------------------------------------------------------- new items: text vs ID

def assert_text_beats_id_on_new_items(text: dict, ids: dict):
    """Measured on `cold` (split and model seeds 0, 1, 2, 3; 2 epochs), recall@10_cold:
        sequential-text 0.1775 0.1814 0.1662 0.1014    ndcg@10_cold 0.2018 0.2300 0.2211 0.1296
        sequential-id   0.0285 0.0229 0.0369 0.0324                 0.0412 0.0298 0.0415 0.0398
        text - id       0.149  0.159  0.129  0.069  (ratio 3.1x-7.9x)      0.161  0.200  0.180  0.090
        noise text      0.0207 0.0354 0.0280        (seeds 0-2)            0.0251 0.0458 0.0307
        noise - id      -0.008 +0.013 -0.009        (ratio 1.55x at most)  -0.016 +0.016 -0.011
    Margins: recall 0.04 and 2x, ndcg 0.05: about half the smallest gap of any seed (seed 3), three times the largest
    gap noise vectors reach. Seed 0, tested here, has gaps of 0.149 and 0.161."""
    assert text['recall@10_cold'] >= ids['recall@10_cold'] + 0.04, (text, ids)
    assert text['recall@10_cold'] >= 2 * ids['recall@10_cold'], (text, ids)
    assert text['ndcg@10_cold'] >= ids['ndcg@10_cold'] + 0.05, (text, ids)

def test_text_beats_id_on_new_items(cold_text, cold_id):
    assert_text_beats_id_on_new_items(cold_text, cold_id)

def test_noise_text_vectors_break_the_new_item_claim(cold, cold_id, text_vectors):
    "Mutation: the same model on Gaussian noise instead of the titles' vectors (measured, seed 0: 0.0207 vs 0.0285)."
    noise = fit('sequential-text', cold, epochs=COLD_EPOCHS, text_vectors=noise_like(text_vectors))
    with pytest.raises(AssertionError): assert_text_beats_id_on_new_items(noise, cold_id)


# ---------------------------------------------------------------- pretrained vs random-init encoder

def assert_pretrained_beats_random_init(pretrained: dict, scratch: dict):
    """Measured on `cold` (seeds 0, 1, 2, 3; 2 epochs):
        ndcg@10_cold    pretrained 0.2018 0.2300 0.2211 0.1296   random init 0.1492 0.1089 0.1202 0.0814
                        gap        0.053  0.121  0.101  0.048
        recall@10_cold  gap        0.041  0.090  0.085  0.040
    Margins 0.025 (ndcg) and 0.02 (recall): half the smallest gap. A random-init encoder in place of the pretrained
    one, with the same seed, is the very same model: a gap of exactly 0."""
    assert pretrained['ndcg@10_cold'] >= scratch['ndcg@10_cold'] + 0.025, (pretrained, scratch)
    assert pretrained['recall@10_cold'] >= scratch['recall@10_cold'] + 0.02, (pretrained, scratch)

def test_pretrained_beats_random_init_on_new_items(cold_text, cold_scratch):
    assert_pretrained_beats_random_init(cold_text, cold_scratch)

def test_random_init_breaks_the_pretrained_claim(cold, cold_scratch, monkeypatch):
    "Mutation: `sequential-text` whose encoder loads with random weights (as if `pretrained` were ignored)."
    load = transferrec.encoders.load_encoder
    monkeypatch.setattr(transferrec.encoders, 'load_encoder', lambda *a, **k: load(*a, **{**k, 'pretrained': False}))
    broken = fit('sequential-text', cold, epochs=COLD_EPOCHS)
    assert broken == pytest.approx(cold_scratch, abs=1e-9)      # it is the random-init model
    with pytest.raises(AssertionError): assert_pretrained_beats_random_init(broken, cold_scratch)


# ---------------------------------------------------------------- EASE with a text prior

@pytest.fixture(scope='module')
def cold_ease(cold): return fit('ease', cold)

@pytest.fixture(scope='module')
def cold_ease_text(cold, text_vectors): return fit('ease-text', cold, text_vectors=text_vectors)

def test_ease_text_beats_ease_on_new_items(cold_ease, cold_ease_text):
    """EASE has no row for an item nobody rated, so new items tie; the text prior ranks them. Measured recall@10_cold
    (seeds 0-3): EASE 0.0075, 0.0193, 0.0317, 0.0091; EASE-text 0.1339, 0.1296, 0.1351, 0.1175 (gaps 0.103 to
    0.126); EASE with a noise prior 0.0305, 0.0310, 0.0317, 0.0332 (gaps 0.024 at most). Margin 0.06: between the two."""
    assert cold_ease_text['recall@10_cold'] >= cold_ease['recall@10_cold'] + 0.06, (cold_ease_text, cold_ease)

@pytest.fixture(scope='module')
def random_ease(random_split): return fit('ease', random_split)

@pytest.fixture(scope='module')
def random_ease_text(random_split, text_vectors): return fit('ease-text', random_split, text_vectors=text_vectors)

def assert_ease_text_edges_out_ease(text: dict, ease: dict):
    """Measured ndcg@10 on `random` (split seeds 0-4):
        ease               0.3243 0.3212 0.3140 0.3205 0.3250
        ease-text          0.3296 0.3288 0.3175 0.3220 0.3274   gap +0.0053 +0.0076 +0.0035 +0.0015 +0.0024
        ease, noise prior  0.3219 0.3212 0.3145 0.3205 0.3250   gap -0.0024  0.0000 +0.0005  0.0000  0.0000
    (validation tunes the prior's weight, and picks 0 when it does not help). Margin 0.001: above every noise gap,
    below every text gap. "Edges out" is the README's word: the gap is small, recall@10 is not always ahead."""
    assert text['ndcg@10'] >= ease['ndcg@10'] + 0.001, (text, ease)

def test_ease_text_edges_out_ease_on_random(random_ease_text, random_ease):
    assert_ease_text_edges_out_ease(random_ease_text, random_ease)

def test_noise_text_prior_breaks_the_ease_claim(random_split, random_ease, text_vectors):
    "Mutation: the prior built from Gaussian noise (measured, seed 0: 0.3219 vs EASE 0.3243)."
    noise = fit('ease-text', random_split, text_vectors=noise_like(text_vectors))
    with pytest.raises(AssertionError): assert_ease_text_edges_out_ease(noise, random_ease)


# ---------------------------------------------------------------- loo: text+id vs id

@pytest.fixture(scope='module')
def loo_text_id(loo, text_vectors): return fit('sequential-text+id', loo, epochs=LOO_EPOCHS, text_vectors=text_vectors)

@pytest.fixture(scope='module')
def loo_id(loo): return fit('sequential-id', loo, epochs=LOO_EPOCHS)

@pytest.fixture(scope='module')
def loo_noise_id(loo, text_vectors):
    "The control: the text+id model on Gaussian noise instead of the titles' vectors."
    return fit('sequential-text+id', loo, epochs=LOO_EPOCHS, text_vectors=noise_like(text_vectors))

def assert_text_and_id_beat_id(text_id: dict, ids: dict, noise_id: dict):
    """Measured ndcg@10 on `loo` after 3 epochs (model seeds 0-4; the split has no seed):
        sequential-text+id   0.0724 0.0622 0.0666 0.0644 0.0722
        sequential-id        0.0346 0.0411 0.0348 0.0392 0.0430   text+id - id     0.038 0.021 0.032 0.025 0.029
        text+id, noise text  0.0661 0.0498 0.0454 0.0501 0.0494   text+id - noise  0.006 0.012 0.021 0.014 0.023
    At 3 epochs the ID model is far from converged (the recorded full runs: id 0.0820, text+id 0.0971), and the
    text+id architecture trains faster even on noise: noise+id beats id by 0.006 to 0.032. So beating ID alone does not
    show that the text helps; the second assertion compares with the noise control, whose gap is thin at this budget
    (smallest 0.006, at seed 0) and of the size of the noise draw's own spread (model seed 0, noise seeds 1000, 1001,
    1002: 0.0661, 0.0570, 0.0574; the control is the first). Margins: 0.015 over ID (below the smallest gap, 0.021)
    and 0.003 over the control (half the smallest gap). The text's benefit on `loo` is thin at a budget this small; the
    new-item tests above are where the text's effect is wide."""
    assert text_id['ndcg@10'] >= ids['ndcg@10'] + 0.015, (text_id, ids)
    assert text_id['ndcg@10'] >= noise_id['ndcg@10'] + 0.003, (text_id, noise_id)
    assert text_id['recall@10'] >= noise_id['recall@10'] + 0.003, (text_id, noise_id)

def test_text_and_id_beat_id_on_loo(loo_text_id, loo_id, loo_noise_id):
    assert_text_and_id_beat_id(loo_text_id, loo_id, loo_noise_id)

def test_noise_text_vectors_break_the_loo_claim(loo, loo_id, loo_noise_id, text_vectors):
    """Mutation: the candidate's text vectors replaced by another draw of noise. It still beats ID by more than the
    first margin (so that assertion alone would not catch it) but not the noise control. Measured: 0.0570 against ID
    0.0346 and the control 0.0661."""
    other = np.random.default_rng(1001).standard_normal(text_vectors.shape).astype(np.float32)
    noise = fit('sequential-text+id', loo, epochs=LOO_EPOCHS, text_vectors=other)
    assert noise['ndcg@10'] >= loo_id['ndcg@10'] + 0.015                 # the ID comparison alone is fooled
    with pytest.raises(AssertionError): assert_text_and_id_beat_id(noise, loo_id, loo_noise_id)


# ---------------------------------------------------------------- seen items: excluded vs ranked

@pytest.fixture(scope='module')
def loo_baselines(loo):
    models = {name: get_model(name, seed=SEED, progress=False) for name in ('pop', 'itemknn', 'ease')}
    for m in models.values(): m.fit(loo)
    return models

def per_user(model, spl, exclude: bool) -> dict:
    "Per-user test metrics of `model`, seen items excluded from the ranking or left in it."
    users = np.arange(spl.n_users)
    return transferrec.metrics.rank_metrics(model.score(users, on='test'), spl.matrix('test'), 10,
                                            exclude=spl.seen('test') if exclude else None, metrics=['ndcg', 'recall', 'mrr'])

def assert_excluding_only_helps(models: dict, spl):
    """09_benchmark: on ml-100k no held-out item was seen before, so seen items "only push the target down" and our
    protocol, which removes them, "is easier". Per user it can only help; on the mean, measured (deterministic: the loo
    split and these models have no randomness), ndcg@10 excluded vs ranked: pop 0.0449 vs 0.0224, itemknn 0.0608 vs
    0.0285, EASE 0.0700 vs 0.0073. Margin: excluded at least 1.5x ranked for every model, 5x for EASE, whose scores
    reproduce the history itself."""
    for name, model in models.items():
        ex, kept = per_user(model, spl, True), per_user(model, spl, False)
        for m in ('ndcg@10', 'recall@10', 'mrr@10'):
            ok = ~np.isnan(ex[m])
            assert (ex[m][ok] >= kept[m][ok] - 1e-12).all(), (name, m)
        ratio = np.nanmean(ex['ndcg@10']) / max(np.nanmean(kept['ndcg@10']), 1e-12)
        assert ratio >= (5 if name == 'ease' else 1.5), (name, ratio)
        full = {p: evaluate(model, spl, 10, metrics=['ndcg'], exclude_seen=p)['ndcg@10'] for p in (True, False)}
        assert full[True] == pytest.approx(np.nanmean(ex['ndcg@10'])) and full[False] == pytest.approx(np.nanmean(kept['ndcg@10']))

def test_excluding_seen_items_only_helps(loo, loo_baselines):
    assert loo.matrix('test').multiply(loo.seen('test')).nnz == 0     # the premise: no held-out item was seen before
    assert_excluding_only_helps(loo_baselines, loo)

def test_ignoring_exclusion_breaks_the_seen_claim(loo, loo_baselines, monkeypatch):
    "With `rank_metrics` ignoring `exclude`, both policies give the same numbers and the claim's assertion fails."
    ranked = transferrec.metrics.rank_metrics
    monkeypatch.setattr(transferrec.metrics, 'rank_metrics', lambda *a, exclude=None, **k: ranked(*a, **k))
    with pytest.raises(AssertionError): assert_excluding_only_helps({'ease': loo_baselines['ease']}, loo)


# ---------------------------------------------------------------- the live numbers are the recorded ones

RECORDS = Path(__file__).resolve().parent.parent/'benchmarks'

def assert_matches_record(live: dict, recorded: dict, tolerance: float):
    "Every metric the record holds (fit times aside) equals the live one within `tolerance`."
    metrics = [m for m in recorded if '@' in m]
    assert metrics and {m: live[m] for m in metrics} == pytest.approx({m: recorded[m] for m in metrics}, abs=tolerance)

def test_seed_0_numbers_are_the_recorded_ones(cold_text, cold_id, cold_scratch, cold_ease, cold_ease_text, random_ease,
                                              random_ease_text):
    """At seed 0 these configurations are the recorded runs of benchmarks/transfer.py: EASE is closed-form, and on
    `cold` the full sequential runs stop early with their best epoch at 1 or 2. So the numbers the README shows must
    come out here: a record edited by hand, or a code change that moves the numbers without a new record, fails.
    Tolerances: 1e-6 for the closed-form models, 1e-4 (the tables' precision) for trained ones, whose float sums may
    differ in the last digits on another CPU."""
    record = lambda protocol: json.loads((RECORDS/f'transfer-{protocol}.json').read_text())
    cold, rnd = record('cold'), record('random')
    assert cold['seed'] == rnd['seed'] == SEED
    for name, live in {'sequential-text': cold_text, 'sequential-id': cold_id, 'sequential-scratch': cold_scratch}.items():
        assert_matches_record(live, cold['results'][name], 1e-4)
    assert_matches_record(cold_ease, cold['results']['ease'], 1e-6)
    assert_matches_record(cold_ease_text, cold['results']['ease-text'], 1e-6)
    assert_matches_record(random_ease, rnd['results']['ease'], 1e-6)
    assert_matches_record(random_ease_text, rnd['results']['ease-text'], 1e-6)

def test_an_edited_record_is_caught(cold_text):
    "Mutation: one recorded number changed in its fourth decimal."
    recorded = json.loads((RECORDS/'transfer-cold.json').read_text())['results']['sequential-text']
    edited = {**recorded, 'recall@10_cold': recorded['recall@10_cold'] + 0.0005}
    with pytest.raises(AssertionError): assert_matches_record(cold_text, edited, 1e-4)


# ---------------------------------------------------------------- deterministic baselines: exactly the recorded numbers

def test_deterministic_baselines_are_the_recorded_ones(random_split, random_ease, loo, loo_baselines):
    """Pop, ItemKNN and EASE have no randomness (EASE's strength is chosen on validation by a fixed grid): the numbers
    the README's "How it compares" table computes again (nbs/index.ipynb, `random`, whose hidden cell asserts the same)
    and the `loo` ones are the recorded ones to 1e-12 (measured: identical, difference 0.0)."""
    record = lambda protocol: json.loads((RECORDS/f'transfer-{protocol}.json').read_text())['results']
    rnd = {'ease': random_ease}
    for name in ('pop', 'itemknn'):
        m = get_model(name, seed=SEED, progress=False); m.fit(random_split); rnd[name] = protocol_metrics(m, random_split)
    for name, live in rnd.items(): assert_matches_record(live, record('random')[name], 1e-12)
    for name, model in loo_baselines.items(): assert_matches_record(protocol_metrics(model, loo), record('loo')[name], 1e-12)


# ---------------------------------------------------------------- the README's sentences hold on the recorded tables

def assert_readme_sentences_hold(loo: dict, cold: dict, rnd: dict, cold_seeds: dict, loo_seeds: dict):
    """nbs/index.ipynb (the README) says, of the tables it shows: "On the time-ordered `loo` split the sequential model
    with text+ID items and a learned repeat bias is the best model in each recorded seed under both seen-items policies
    and fits in under five minutes on two cores (measured alone on the machine), and over three seeds the 95% interval
    of its lead over the ID-only sequential model lies above zero; without the repeat bias, text+ID items lead in each
    seed too, but the interval of that lead still includes zero. The two-tower model
    ... is above EASE in the seed-0 table ... and fits in under five minutes on two cores; re-ranking its top 20 with the
    tutorial cross-encoder lowers it. On items never
    seen in training (`cold`) the text models
    recommend what ID models cannot; under `random`, EASE with a pretrained text prior edges out plain EASE." Each holds
    on the records, the cold-start one over seeds too: the 95% interval of the paired text - id differences of
    transfer-cold-seeds.json lies above zero (a mean of seeds alone is no verdict). On `loo` the lead over
    sequential-id in transfer-loo-seeds.json (seeds 0-2, ndcg@10: +0.015, +0.020, +0.039) has the interval -0.006 to
    +0.055: when more seeds resolve it, this test fails and the sentence is to be rewritten. With the repeat bias the
    lead (+0.027, +0.027, +0.048) has the interval +0.004 to +0.065 under `exclude`."""
    for m in ('ndcg@10', 'recall@10'): assert loo['two-tower'][m] > loo['ease'][m] and loo['two-tower+rerank'][m] < loo['two-tower'][m], m
    assert loo['two-tower']['fit_seconds'] < 300
    best_fit = [run['results']['sequential-text+id+repeats']['fit_seconds'] for run in loo_seeds['runs']]
    assert np.mean(best_fit) < 300, best_fit
    assert [a.get('jobs') for a in loo_seeds.get('added', []) if 'sequential-text+id+repeats' in a['models']][-1:] == [1]   # alone
    lead = lambda model, part: [run[part][model]['ndcg@10'] - run[part]['sequential-id']['ndcg@10'] for run in loo_seeds['runs']]
    for part in ('results', 'results_keep'):
        for run in loo_seeds['runs']:
            r = run[part]; assert max(r, key=lambda name: r[name]['ndcg@10']) == 'sequential-text+id+repeats', (part, run['seed'])
        assert len(loo_seeds['runs']) == 3 and seed_ci(lead('sequential-text+id+repeats', part))[1] > 0, part
        assert min(lead('sequential-text+id', part)) > 0, part
    without = lead('sequential-text+id', 'results')
    assert seed_ci(without)[1] <= 0 < seed_ci(without)[0], (without, seed_ci(without))
    text, ids = ('sequential-text', 'ease-text'), ('pop', 'ease', 'sequential-id')
    for m in ('ndcg@10_cold', 'recall@10_cold'):
        assert min(cold[t][m] for t in text) > max(cold[i][m] for i in ids), m
    assert rnd['ease-text']['ndcg@10'] > rnd['ease']['ndcg@10']
    for m in ('ndcg@10_cold', 'recall@10_cold'):
        diff = [run['results']['sequential-text'][m] - run['results']['sequential-id'][m] for run in cold_seeds['runs']]
        assert len(diff) >= 2 and seed_ci(diff)[1] > 0, (m, diff, seed_ci(diff))

def records() -> dict:
    return {p: json.loads((RECORDS/f'transfer-{p}.json').read_text()) for p in ('loo', 'cold', 'random', 'cold-seeds', 'loo-seeds')}

def test_readme_sentences_hold_on_the_records():
    r = records()
    assert_readme_sentences_hold(r['loo']['results'], r['cold']['results'], r['random']['results'], r['cold-seeds'], r['loo-seeds'])

@pytest.mark.parametrize('edit', ['loo', 'loo-rerank', 'loo-fit', 'best-fit', 'cold', 'random', 'seeds', 'loo-seed', 'loo-resolved'])
def test_an_edited_record_breaks_a_readme_sentence(edit):
    "Mutation: one number of a record edited so that its sentence is false (or, for the seeds, one seed only)."
    r = records()
    loo, cold, rnd, seeds, loo_seeds = r['loo']['results'], r['cold']['results'], r['random']['results'], r['cold-seeds'], r['loo-seeds']
    if edit == 'loo': loo['ease']['ndcg@10'] = loo['two-tower']['ndcg@10'] + 0.001
    if edit == 'loo-rerank': loo['two-tower+rerank']['ndcg@10'] = loo['two-tower']['ndcg@10'] + 0.001
    if edit == 'loo-fit': loo['two-tower']['fit_seconds'] = 301
    if edit == 'best-fit': loo_seeds['runs'][0]['results']['sequential-text+id+repeats']['fit_seconds'] = 600
    if edit == 'cold': cold['sequential-id']['recall@10_cold'] = cold['ease-text']['recall@10_cold'] + 0.001
    if edit == 'random': rnd['ease-text']['ndcg@10'] = rnd['ease']['ndcg@10']
    if edit == 'seeds': seeds['runs'] = seeds['runs'][:1]
    one = loo_seeds['runs'][2]['results']
    if edit == 'loo-seed': one['sequential-id']['ndcg@10'] = one['sequential-text+id+repeats']['ndcg@10'] + 0.001
    if edit == 'loo-resolved': one['sequential-text+id']['ndcg@10'] = one['sequential-id']['ndcg@10'] + 0.018   # seeds agree
    with pytest.raises(AssertionError): assert_readme_sentences_hold(loo, cold, rnd, seeds, loo_seeds)


# ---------------------------------------------------------------- `random` rounds as RecBole does

def recbole_split_sizes():
    """RecBole 1.2.1's own `Dataset._calcu_split_ids` (per-group split points), from the installed package. RecBole is
    installed with --no-deps, and `recbole.data.dataset.dataset` imports packages it then lacks (colorlog first), so
    when that import fails the function's source is read from the installed file with `ast` and only it is executed."""
    spec = importlib.util.find_spec('recbole')
    if spec is None: pytest.skip('recbole is not installed')
    try:
        from recbole.data.dataset.dataset import Dataset
        return getattr(Dataset, '_calcu_split_ids'), 'imported'
    except ImportError:
        path = Path(spec.origin).parent/'data'/'dataset'/'dataset.py'
        tree = ast.parse(path.read_text())
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == 'Dataset')
        fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == '_calcu_split_ids')
        namespace = {'np': np}
        exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), 'exec'), namespace)
        return namespace['_calcu_split_ids'], 'read from source'

def recbole_parts(split_ids, tot: int, ratios=(0.8, 0.1, 0.1)) -> tuple:
    "RecBole's (train, valid, test) sizes of a group of `tot` interactions."
    return tuple(np.diff([0, *split_ids(None, tot=tot, ratios=list(ratios)), tot]).tolist())

def part_sizes(spl) -> pd.DataFrame:
    "Per user: total interactions and the sizes of train, valid and test."
    sizes = pd.DataFrame({p: getattr(spl, p).groupby('user_idx').size() for p in ('train', 'valid', 'test')}).fillna(0).astype(int)
    return sizes.assign(tot=sizes.sum(axis=1))

def test_random_split_rounds_as_recbole(random_split):
    """Every user's train/valid/test sizes are those of RecBole's own function: on ml-100k (20 to 737 ratings per user)
    and on users with 1 to 40 interactions, where RecBole bumps a part of 0 < 0.1 n < 1 to one interaction. The
    control: a plain rounding (`round(0.1 n)`) gives other sizes for some of these users, so the check can fail."""
    split_ids, how = recbole_split_sizes()
    small = from_dataframes(pd.DataFrame([(u, i) for u in range(1, 41) for i in range(u)], columns=['user_id', 'item_id']))
    for spl in (random_split, split(small, 'random', seed=0)):
        sizes = part_sizes(spl)
        expected = [recbole_parts(split_ids, n) for n in sizes['tot']]
        assert [tuple(r) for r in sizes[['train', 'valid', 'test']].to_numpy().tolist()] == expected, how
    plain = [(n - 2 * round(0.1 * n), round(0.1 * n), round(0.1 * n)) for n in range(1, 41)]
    assert plain != [recbole_parts(split_ids, n) for n in range(1, 41)]
