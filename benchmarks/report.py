"""Renders the speed benchmark's results.json as results.md: the machine, a table of every target and its verdict, then
one part per section. `python benchmarks/report.py [folder]` rewrites folder/results.md (default: benchmarks/)."""
import sys
from pathlib import Path
from harness import SECTIONS, T, read_results
from transferrec.records import seed_ci

MULTI_GPU = ("Multi-GPU and multi-node training (launch commands, batch size per process, saving from rank 0): "
             "[Multi-process and multi-GPU training](../nbs/06a_two_tower.ipynb#multi-process-and-multi-gpu-training).")

def f(x, nd=2): return '-' if x is None else (f'{x:,.{nd}f}' if isinstance(x, float) else f'{x:,}' if isinstance(x, int) else str(x))

def verdict(ok: bool) -> str: return 'met' if ok else '**missed**'

def same_quality(s: dict) -> str:
    "Verdict on the truncation section: its paired interval against the tolerance `T['same_quality']`."
    d, tol = s['difference'], T['same_quality'] * s['seed_inputs']['valid_ndcg@10']
    if d['low'] >= -tol: return 'met'
    if d['high'] < 0: return '**missed**'
    needed = s['users'] * ((d['high'] - d['low']) / 2 / tol) ** 2   # an interval's width shrinks as 1/sqrt(users)
    return (f"not resolved: the interval spans both 0 and -{T['same_quality']:.0%}; an interval as narrow as "
            f"±{T['same_quality']:.0%} would need about {needed:,.0f} users, and the validation split has "
            f"{s['users_available']:,}")

def within_over_seeds(changes: list, tol: float) -> str:
    """Verdict on "within ±`tol`" from paired relative changes, one per seed: met when the 95% Student-t interval of
    their mean lies inside ±`tol`, missed when it lies wholly outside, otherwise not resolved (a mean alone is no
    verdict: the seeds may spread far more than the tolerance)."""
    n = len(changes)
    if n < 2: return f"not resolved: {n} seed recorded, so no interval over seeds"
    _, lo, hi = seed_ci(changes)
    if -tol <= lo and hi <= tol: return 'met'
    if hi < -tol or lo > tol: return '**missed**'
    needed = n * ((hi - lo) / 2 / tol) ** 2              # an interval's width shrinks as 1/sqrt(seeds)
    return (f"not resolved: the 95% interval over {n} seeds, {lo:+.1%} to {hi:+.1%}, spans the ±{tol:.0%} bound; an "
            f"interval as narrow as ±{tol:.0%} would need about {needed:,.0f} seeds")

def seed_changes_text(changes: list) -> str:
    "The paired relative changes, their mean and (with two seeds or more) their 95% interval."
    if len(changes) == 1: return f"{changes[0]:+.1%}, one seed, no interval"
    m, lo, hi = seed_ci(changes)
    return ', '.join(f'{x:+.1%}' for x in changes) + f" over {len(changes)} seeds: mean {m:+.1%}, 95% interval {lo:+.1%} to {hi:+.1%}"

def int8_changes(q: dict) -> list[float]:
    "Per seed, the int8 run's test ndcg@10 relative to the fp32 run's, from the recorded values themselves."
    return [(b - a) / a for a, b in zip(q['test_ndcg@10']['fp32'], q['test_ndcg@10']['int8'])]

def bench_seconds(S: dict) -> float:
    "Seconds of the sections `make bench` runs (the on-request ones excluded)."
    return sum(x['section_seconds'] for k, x in S.items() if k in SECTIONS)

# ---------------------------------------------------------------------------------------------------------------------
# the targets table: (what, target, measured, verdict) rows of each recorded section
def row(what, target, measured, ok) -> tuple: return (what, target, measured, ok if isinstance(ok, str) else verdict(ok))

def at_full_size(s: dict) -> str|None: return 'not at full size (--quick)' if s['quick'] else None

def encoding_targets(s: dict) -> list[tuple]:
    q = s['quality']
    return [row('encoding, fp32 vs sentence-transformers', '>= 1.0x', f"{s['speedup_fp32_vs_st']:.2f}x", s['speedup_fp32_vs_st'] >= T['encode_fp32']),
            row('encoding, int8 vs sentence-transformers', '>= 1.8x', f"{s['speedup_int8_vs_st']:.2f}x", s['speedup_int8_vs_st'] >= T['encode_int8']),
            row('int8 vs fp32 vectors, loo ndcg@10', f"within {T['int8_quality']:.0%} (95% interval over seeds)",
                f"paired changes {seed_changes_text(int8_changes(q))}",
                at_full_size(s) or within_over_seeds(int8_changes(q), T['int8_quality']))]

def finetune_targets(s: dict) -> list[tuple]:
    c = s['cross_encoder']
    return [row('cross-encoder training, vs the seed configuration', '>= 3x samples/s', f"{c['speedup']:.1f}x", c['speedup'] >= T['cross_encoder']),
            row('same validation quality: padding', 'same', f"dynamic padding alone {c['speedup_padding_only']:.1f}x, logits "
                f"identical to 512-padding (max diff {c['padding_max_abs_logit_difference']:.0e})",
                c['padding_max_abs_logit_difference'] < 1e-4)]

def truncation_targets(s: dict) -> list[tuple]:
    d = s['difference']
    return [row('same validation quality: truncated histories', f"within {T['same_quality']:.0%}", f"valid ndcg@10 "
                f"{s['truncated']['valid_ndcg@10']:.4f} vs {s['seed_inputs']['valid_ndcg@10']:.4f} ({s['relative_change'] * 100:+.1f}%, "
                f"paired 95% CI {d['low']:+.4f}..{d['high']:+.4f}, {s['users']} users)",
                at_full_size(s) or same_quality(s))]

def serving_targets(s: dict) -> list[tuple]:
    lat, au = s['latency_ms'], s['all_users']['median_seconds']
    p50, bare = lat['explain=True']['p50'], lat['explain=False']['p50']   # the default call gives its reasons
    return [row('recommend() for one user, with its reasons (the default)', 'p50 < 5 ms',
                f"{p50:.2f} ms (explain=False: {bare:.2f} ms)", p50 < T['recommend_p50_ms']),
            row(f"scoring and ranking all {s['all_users']['users']} users", '< 2 s', f"{au:.2f} s", au < T['all_users_s'])]

def target_index(s: dict) -> str:
    "The index the targets are read from: of IVF float32 and the int8 graph, the fastest that meets the recall target, else IVF float32."
    ok = lambda b: isinstance(b, dict) and b['recall@10'] >= T['index_recall']
    names = [n for n in ('ivf_float32', 'hnsw_int8') if ok(s['indexes'].get(n))]
    return min(names, key=lambda n: s['indexes'][n]['p50_ms']) if names else 'ivf_float32'

def catalogue_targets(s: dict) -> list[tuple]:
    name = target_index(s)
    b, full, what = s['indexes'].get(name), at_full_size(s), f"{s['items']:,}-item index ({name.replace('_', ' ')})"
    if not isinstance(b, dict): return []
    return [row(f"{what}, top-10 query", 'p50 < 10 ms', f"{b['p50_ms']:.2f} ms", full or b['p50_ms'] < T['index_p50_ms']),
            row(f"{what}, recall@10 vs exact", '>= 0.95', f"{b['recall@10']:.3f}", full or b['recall@10'] >= T['index_recall']),
            row(f"{what} build", '< 300 s', f"{b['build_seconds']:.0f} s", full or b['build_seconds'] < T['index_build_s'])]

def data_targets(s: dict) -> list[tuple]:
    return [row(f"load, clean and split {s['rows']:,} rows", '< 90 s', f"{s['seconds']:.1f} s", at_full_size(s) or s['seconds'] < T['data_s']),
            row('... peak memory', '< 4 GB', f"{s['peak_rss_mb']:,.0f} MB", at_full_size(s) or s['peak_rss_mb'] < T['data_mb'])]

def distributed_seeds(s: dict) -> dict:
    "Test ndcg@10 of each seed's pair of runs: the recorded seeds, or the one pair of a record made before seeds were."
    if 'seeds' in s: return s['seeds']
    return {'seeds': [0], **{k: [s[k]['test_ndcg@10']] for k in ('single_process', 'torchrun_2_gloo')}}

def distributed_changes(s: dict) -> list[float]:
    "Per seed, the two-process run's test ndcg@10 relative to the one-process run's."
    d = distributed_seeds(s)
    return [(b - a) / a for a, b in zip(d['single_process'], d['torchrun_2_gloo'])]

def distributed_targets(s: dict) -> list[tuple]:
    return [row('torchrun, 2 processes vs 1, test ndcg@10', f"same quality: within {T['same_quality']:.0%} (95% interval over seeds)",
                f"paired changes {seed_changes_text(distributed_changes(s))}",
                within_over_seeds(distributed_changes(s), T['same_quality']))]

# the rows of a section that was not run (or failed)
NOT_RUN = {'truncation': [row('same validation quality: truncated histories', 'same', 'not measured (`make bench-truncation`)', 'not run')]}

def targets(S: dict, machine: dict) -> list[tuple]:
    "Each target of the speed benchmarks as (what, target, measured, verdict), read from the recorded sections."
    rows = []
    for name, (_, _, section_targets) in PARTS.items():
        s = S.get(name)
        rows += section_targets(s) if s is not None and 'error' not in s else NOT_RUN.get(name, [])
    total = bench_seconds(S)
    return rows + [row('two-tower and cross-encoder at full size, bf16 on a GPU', 'recorded', machine['gpu'] or 'no GPU on this machine',
                       'met' if machine['gpu'] else 'not run'),
                   row('`make bench`, all sections', '< 30 min', f"{total / 60:.1f} min (sum of the sections)", total < T['bench_s'])]

# ---------------------------------------------------------------------------------------------------------------------
# the text of each section
def encoding_text(s: dict) -> list[str]:
    tp, med, cpu = s['texts_per_second'], s['median_seconds'], s['cpu_median_seconds']
    return [f"{s['texts']} texts, batch {s['batch_size']}, max {s['max_length']} tokens, "
            "no cache, the bundled all-MiniLM-L6-v2 in both libraries.", '',
            '| encoder | median wall s | texts/s | wall ratio vs sentence-transformers | median CPU s | CPU-time ratio | target |',
            '|---|---|---|---|---|---|---|',
            f"| sentence-transformers `encode` | {f(med['sentence_transformers'])} | {f(tp['sentence_transformers'], 0)} | 1.00 | "
            f"{f(cpu['sentence_transformers'])} | 1.00 | |",
            f"| transferrec `encode_texts` fp32 | {f(med['transferrec_fp32'])} | {f(tp['transferrec_fp32'], 0)} | "
            f"{f(s['speedup_fp32_vs_st'])}x | {f(cpu['transferrec_fp32'])} | {f(s['cpu_speedup_fp32_vs_st'])}x | "
            f">= 1.0x: wall {verdict(s['speedup_fp32_vs_st'] >= T['encode_fp32'])}, CPU {verdict(s['cpu_speedup_fp32_vs_st'] >= T['encode_fp32'])} |",
            f"| transferrec `encode_texts` int8 (`quantize=True`) | {f(med['transferrec_int8'])} | "
            f"{f(tp['transferrec_int8'], 0)} | {f(s['speedup_int8_vs_st'])}x | {f(cpu['transferrec_int8'])} | "
            f"{f(s['cpu_speedup_int8_vs_st'])}x | >= 1.8x: wall {verdict(s['speedup_int8_vs_st'] >= T['encode_int8'])}, CPU {verdict(s['cpu_speedup_int8_vs_st'] >= T['encode_int8'])} |", '',
            f"Wall and CPU time of this process per pass, {len(s['seconds']['sentence_transformers'])} alternating passes per side: "
            "with one thread on a shared machine, CPU time counts only the work done, wall time also the waits for a core. "
            "Per pass (wall s): " + '; '.join(f"{k} " + ', '.join(f'{x:.2f}' for x in v) for k, v in s['seconds'].items()) + '.', '',
            f"Same vectors: minimum cosine fp32 vs sentence-transformers {s['min_cosine_fp32_vs_st']:.6f}; int8 vs fp32 "
            f"{s['min_cosine_int8_vs_fp32']:.4f}.", *int8_text(s['quality'])]

def int8_text(q: dict) -> list[str]:
    per_seed = '; '.join(f"seed {sd}: {a:.4f} / {b:.4f}" for sd, a, b in zip(q['seeds'], q['test_ndcg@10']['fp32'], q['test_ndcg@10']['int8']))
    return ['', f"Quality of int8 vectors: {q['model']} trained {q['epochs']} epochs (patience {q['patience']}) on each "
            f"vector set with the same seeds, `loo` test ndcg@10 fp32 / int8: {per_seed}. Mean fp32 "
            f"{q['mean_test_ndcg@10']['fp32']:.4f}, int8 {q['mean_test_ndcg@10']['int8']:.4f}: relative change "
            f"{q['relative_change'] * 100:+.2f}%. Paired changes (int8 relative to fp32, seed by seed) "
            f"{seed_changes_text(int8_changes(q))}; target within {T['int8_quality']:.0%}: "
            f"{within_over_seeds(int8_changes(q), T['int8_quality'])}. The fp32 runs alone spread "
            f"{q['seed_spread_relative'] * 100:.1f}% of their mean across seeds.", '',
            f"Without retraining: the fp32-trained model (seed {q['seeds'][0]}) scoring with int8 vectors of the same "
            f"catalogue gets {q['fp32_model_scored_with_int8_vectors']:.4f} ({q['swap_relative_change'] * 100:+.1f}%): "
            "the adaptor's whitening magnifies the quantisation error, so a catalogue is encoded with the encoder its "
            f"model was trained on. Each item's 10 nearest items by text cosine: int8 keeps "
            f"{q['neighbour_overlap@10'] * 100:.1f}% of the fp32 ones.", '']

def finetune_text(s: dict) -> list[str]:
    c = s['cross_encoder']; p, d = c['padded_512'], c['dynamic']
    return ['| strategy | setting | samples/s |', '|---|---|---|',
            f"| sequential (text) | batch {s['sequential']['batch_size']} windows, {s['sequential']['epochs']} epochs | "
            f"{f(s['sequential']['windows_per_second'], 0)} windows/s |",
            f"| two-tower | {s['two_tower']['config']}, {s['two_tower']['steps']} steps, Trainer | "
            f"{f(s['two_tower']['pairs_per_second_median_step'], 1)} pairs/s (Trainer overall {f(s['two_tower']['pairs_per_second_trainer'], 1)}) |",
            f"| cross-encoder, seed configuration | pad to {p['max_length']}, last {p['history_items']} items, {p['tokens_per_batch']:,} tokens/batch | "
            f"{f(p['pairs_per_second'], 2)} pairs/s |",
            f"| cross-encoder, transferrec's inputs padded to 512 | truncation to "
            f"{d['max_length']}, last {d['history_items']} items, then padding to 512 | "
            f"{f(c['padded_512_short']['pairs_per_second'], 2)} pairs/s |",
            f"| cross-encoder, transferrec | dynamic padding, truncation to {d['max_length']}, last {d['history_items']} items, "
            f"{d['tokens_per_batch']:,} tokens/batch | {f(d['pairs_per_second'], 1)} pairs/s |", '',
            f"Cross-encoder speed-up: **{c['speedup']:.1f}x** (target >= 3x: {verdict(c['speedup'] >= T['cross_encoder'])}); "
            f"median optimizer-step time after the first step of each run, {p['runs']} alternating run(s) per side, "
            f"{c['config']}.", '',
            f"Validation quality: dynamic padding alone (the same truncated pairs, padded to 512 vs to the batch's longest) "
            f"is **{c['speedup_padding_only']:.1f}x** faster and changes no score: the trained model's logits on "
            f"{c['padding_check_pairs']} pairs differ by at most {c['padding_max_abs_logit_difference']:.1e} between the two "
            "paddings (padding is masked out of attention and pooling), so its validation quality is the same by "
            f"construction ({verdict(c['speedup_padding_only'] >= T['cross_encoder'])} at >= 3x). Truncating histories from "
            f"{p['history_items']} to {d['history_items']} items changes the inputs; its effect on validation quality is the "
            "next section's.", '']

def truncation_text(s: dict) -> list[str]:
    t, o, d = s['truncated'], s['seed_inputs'], s['difference']
    return [f"{s['config']} re-ranking the top {s['top_n']} of {s['retriever'].upper()}, trained {s['steps']} steps on the same "
            f"{t['pairs']:,} pairs and seed with each input, then scored on "
            f"{'all ' if s['users'] == s['users_available'] else 'the same '}{s['users']} validation users. "
            "Dynamic padding on both sides.", '',
            '| inputs | valid ndcg@10 | valid recall@10 | train s | score s |', '|---|---|---|---|---|',
            *[f"| last {r['history_items']} items, {r['max_length']} tokens | {r['valid_ndcg@10']:.4f} | "
              f"{r['valid_recall@10']:.4f} | {r['train_seconds']:.0f} | {r['score_seconds']:.0f} |" for r in (t, o)],
            f"| {s['retriever'].upper()} alone (no re-ranking) | {s['retriever_valid_ndcg@10']:.4f} | | | |", '',
            f"Truncated minus seed inputs, per user: {d['mean']:+.4f} ndcg@10 ({s['relative_change'] * 100:+.1f}%), "
            f"bootstrap 95% interval {d['low']:+.4f} to {d['high']:+.4f}. Met when the whole interval lies above "
            f"-{T['same_quality']:.0%} of the seed inputs' ndcg@10, missed when it lies below zero: "
            f"{'not judged at --quick sizes' if s['quick'] else same_quality(s)}.", '']

def serving_text(s: dict) -> list[str]:
    L = s['latency_ms']; au = s['all_users']
    return [f"{s['model']}, one user per call, k={s['k']}, {s['calls']} calls each, item vectors cached.", '',
            '| call | p50 ms | p90 ms | p99 ms | target |', '|---|---|---|---|---|',
            f"| recommend(user_id, explain=False) | {f(L['explain=False']['p50'])} | {f(L['explain=False']['p90'])} | {f(L['explain=False']['p99'])} | "
            f"p50 < 5 ms: {verdict(L['explain=False']['p50'] < T['recommend_p50_ms'])} |",
            f"| recommend(user_id, explain=True) | {f(L['explain=True']['p50'])} | {f(L['explain=True']['p90'])} | {f(L['explain=True']['p99'])} | "
            f"(reported) p50 < 5 ms: {verdict(L['explain=True']['p50'] < T['recommend_p50_ms'])} |", '',
            f"Scoring and ranking (top 10, seen items excluded) all {au['users']} users over {au['items']} items: "
            f"{au['median_seconds']:.3f} s (target < 2 s: {verdict(au['median_seconds'] < T['all_users_s'])}); the whole `evaluate` "
            f"(all metrics): {au['evaluate_median_seconds']:.3f} s.", '']

def catalogue_text(s: dict) -> list[str]:
    md = [f"Synthetic catalogue: {s['items']:,} x {s['dim']} float32 vectors, {s['structure']}; {s['queries']} queries, each "
          f"{s['query_model']}; top-{s['k']}, one query per call"
          + (f" on the section's thread(s); FAISS builds on {s['build_threads']} threads" if 'build_threads' in s else '')
          + ". Recall@10 against exact search.", '',
          '| index | build s | memory MB | p50 ms | p99 ms | recall@10 | settings |', '|---|---|---|---|---|---|---|']
    for name, r in s['indexes'].items():
        if isinstance(r, str): md.append(f'| {name} | {r} ||||||'); continue
        sets = (f"nlist {r['nlist']}, nprobe {r['chosen_nprobe']}" if 'nlist' in r else
                f"8-bit codes of {r['dims']} directions, M {r['M']}, ef_construction {r['ef_construction']}, ef_search {r['chosen_ef_search']}, "
                f"{r['k_factor']} x k re-scored from a {r['disk_mb']:,.0f} MB float32 file on disk" if 'dims' in r else
                f"M 32, ef_construction {r['ef_construction']}, ef_search {r['chosen_ef_search']}, {r['items_indexed']:,} items" if 'chosen_ef_search' in r else 'blocked matmul + topk')
        md.append(f"| {name} | {f(r['build_seconds'], 1)} | {f(r['memory_mb'], 0)} | {f(r['p50_ms'])} | {f(r['p99_ms'])} | "
                  f"{f(r['recall@10'], 3)} | {sets} |")
    if any(k.startswith('ivf') and isinstance(r, dict) for k, r in s['indexes'].items()): md += index_targets_text(s)
    return md + ['']

def index_targets_text(s: dict) -> list[str]:
    sweep = lambda r: '; '.join(f"{p}: recall {v['recall@10']:.3f}, p50 {v['p50_ms']:.2f} ms" for p, v in r['sweep'].items())
    name = target_index(s)
    b = s['indexes'][name]
    md = ['', f"Targets at {s['items']:,} items ({name.replace('_', ' ')}): p50 < 10 ms {verdict(b['p50_ms'] < T['index_p50_ms'])}, recall@10 >= 0.95 "
          f"{verdict(b['recall@10'] >= T['index_recall'])}, build < 300 s {verdict(b['build_seconds'] < T['index_build_s'])}."
          + (' Measured at 200,000 items (`--quick`): not the 1,000,000-item target size.' if s['items'] < 1_000_000 else '')]
    for name in ('ivf_float32', 'ivf_float16'):
        r = s['indexes'].get(name)
        if r: md.append(f"\n{name} nprobe sweep: " + sweep(r))
    h = s['indexes'].get('hnsw_float32')
    if h: md.append(f"\nhnsw ef_search sweep: " + sweep(h) + (f". {h['note']}" if h.get('note') else ''))
    g = s['indexes'].get('hnsw_int8')
    if g: md.append(f"\nhnsw_int8 ef_search sweep: " + sweep(g))
    return md

def data_text(s: dict) -> list[str]:
    return [f"`load_csv` + `clean` ({s['clean']}) + `split('{s['protocol']}')` of a synthetic {s['rows']:,}-row CSV "
            f"({s['csv_mb']:.0f} MB, ml-20m shaped), in a fresh subprocess; peak memory is its own peak resident set size (VmHWM).", '',
            '| stage | seconds |', '|---|---|',
            *[f"| {k.replace('_seconds', '')} | {s[k]:.1f} |" for k in ('load_seconds', 'clean_seconds', 'split_seconds')],
            f"| **total** | **{s['seconds']:.1f}** |", '',
            f"Peak memory {s['peak_rss_mb']:,.0f} MB. Targets: < 90 s {verdict(s['seconds'] < T['data_s'])}, < 4 GB {verdict(s['peak_rss_mb'] < T['data_mb'])}"
            + (' (measured at 2,000,000 rows with `--quick`, not the 20,000,000-row target size).' if s['rows'] < 20_000_000 else '.'),
            f"After cleaning: {s['after_clean']['users']:,} users, {s['after_clean']['items']:,} items, {s['after_clean']['interactions']:,} interactions.", '']

def distributed_text(s: dict) -> list[str]:
    o, t = s['single_process'], s['torchrun_2_gloo']
    return [f"{s['model']}: one process with batch 32 vs `torchrun --nproc_per_node 2` with batch 16 per process; the "
            f"table gives seed {distributed_seeds(s)['seeds'][0]}'s pair of runs.", '',
            '| run | steps | best valid ndcg@10 | test ndcg@10 | zero-shot valid ndcg@10 | train s | wall s |', '|---|---|---|---|---|---|---|',
            *[f"| {n} | {r['steps']} | {r['best_valid_ndcg@10']:.4f} | {r['test_ndcg@10']:.4f} | {r['zero_shot_valid_ndcg@10']:.4f} | "
              f"{r['train_seconds']:.1f} | {r['wall_seconds']:.1f} |" for n, r in (('1 process', o), ('torchrun, 2 gloo processes', t))], '',
            *distributed_seeds_text(s)]

def distributed_seeds_text(s: dict) -> list[str]:
    "What the recorded seeds can show about 'same quality', and what tests/test_distributed.py checks on every test run."
    d = distributed_seeds(s)
    per_seed = '; '.join(f"seed {sd}: {a:.4f} / {b:.4f}" for sd, a, b in zip(d['seeds'], d['single_process'], d['torchrun_2_gloo']))
    return [f"Test ndcg@10, 1 process / 2 processes: {per_seed}. The two-process run draws its in-batch negatives from a "
            "local batch of 16 and sees the data in another order, so it lands on another optimum, as another seed "
            f"would: the target (within {T['same_quality']:.0%}) is judged on the 95% interval of the paired changes over "
            f"seeds: {within_over_seeds(distributed_changes(s), T['same_quality'])}. On every test run, "
            "`tests/test_distributed.py` checks what one run can show: the same number of optimizer steps, both ranks "
            "ending with identical weights, both runs learning, and a difference in ndcg@10 within the seed-to-seed "
            "spread it measured.", '']

# each section's title, text and targets, in the order of the report
PARTS = {'encoding': ('Encoding the ml-100k item texts', encoding_text, encoding_targets),
         'finetune': ('Training throughput (ml-100k loo)', finetune_text, finetune_targets),
         'truncation': ("Cross-encoder validation quality: truncated histories vs the seed's", truncation_text, truncation_targets),
         'serving': ('Serving: `Recommender.recommend` on ml-100k', serving_text, serving_targets),
         'catalogue': ('Large catalogues: `transferrec.retrieval.VectorIndex`', catalogue_text, catalogue_targets),
         'data': ('Data pipeline at scale', data_text, data_targets),
         'distributed': ('Multi-process training (CPU, gloo)', distributed_text, distributed_targets)}

# ---------------------------------------------------------------------------------------------------------------------
def header(res: dict) -> list[str]:
    m = res['machine']
    return ['# Speed and scale benchmarks', '',
            f"Generated by `benchmarks/speed.py{' --quick' if res['quick'] else ''}`; last run {res['date']}; the sections took "
            f"{bench_seconds(res['sections']):.0f} s in all (a section rerun with `--only` "
            "replaces its earlier result; each gives its own start time, duration, torch threads, nice and load). "
            f"Machine of the last run (each section names the CPU it ran on): {m['cpu']}, {m['cpu_count']} cores, "
            f"{m['memory_gb']} GB, {m['platform']}; GPU: {m['gpu'] or 'none'}. Versions: "
            + ', '.join(f'{k} {v}' for k, v in m['versions'].items()) + '.', '',
            'The machine is shared: the load average (1, 5, 15 min) before and after each section is given, and '
            'timings on a loaded machine are slower than on an idle one. Each comparison runs both sides in this one '
            'process, alternating after a warm-up; numbers are medians. Reproduce: `make bench` (or '
            '`nice -n 10 python benchmarks/speed.py [--quick]`).', '',
            '## Targets', '', '| what | target | measured | verdict |', '|---|---|---|---|',
            *[f'| {a} | {b} | {c} | {d} |' for a, b, c, d in targets(res['sections'], m)], '']

def section(s: dict|None, title: str, text) -> list[str]:
    "A section's title, then 'not run', its error, or when, where and under which load it ran followed by its `text`."
    if s is None: return [f'## {title}', '', 'not run', '']
    if 'error' in s: return [f'## {title}', '', f"failed: `{s['error']}`", '']
    return [f'## {title}', '', f"started {s['date']}, on {s['cpu']}, "
            f"{s['section_seconds']:.0f} s, {s['threads']} torch thread(s), nice {s['nice']}, load average before/after: "
            f"{s['load_before']} / {s['load_after']}{', --quick sizes' if s['quick'] else ''}", '', *text(s)]

def markdown(res: dict) -> str:
    "The whole report of a results.json record."
    md = header(res)
    for name, (title, text, _) in PARTS.items(): md += section(res['sections'].get(name), title, text)
    return '\n'.join(md + [MULTI_GPU]) + '\n'

def write_markdown(out: Path, res: dict|None=None):
    "Write `out`/results.md from `res` (by default `out`/results.json)."
    (Path(out)/'results.md').write_text(markdown(read_results(out) if res is None else res))

if __name__ == '__main__': write_markdown(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
