"""Speed and scale benchmarks of transferrec, each side by side with the alternative, in one process.

Sections (all by default; pick some with --only a,b):
  encoding     encode_texts (fp32 and int8) vs sentence-transformers on the ml-100k item texts, and the quality of int8
  finetune     training throughput of every strategy; the cross-encoder with dynamic padding vs padding to 512 tokens
  serving      Recommender.recommend latency for one user, and scoring + ranking all 943 users (ml-100k)
  catalogue    transferrec.retrieval indexes on a synthetic 1,000,000 x 384 catalogue (200,000 with --quick), realistic
               vectors by default (--catalogue-vectors; see benchmarks/scale.py)
  data         load_csv + clean + split of a synthetic 20,000,000-interaction CSV (2,000,000 with --quick), in a subprocess
  distributed  tests/test_distributed.py's two-tower run: one process vs torchrun with two gloo processes

Only on request (--only truncation; `make bench-truncation`, about 40 minutes on 2 cores):
  truncation   validation quality of the cross-encoder trained on the last 5 items in 64 tokens vs the seed's last 50
               items in 512 tokens, same seed, steps and pairs, on every validation user

Timed comparisons alternate the two sides round by round after a warm-up and report medians and their ratio. Run it
with `nice`: the load average of the machine is recorded before and after each section. Writes benchmarks/results.json
and benchmarks/results.md. Usage: python benchmarks/speed.py [--quick] [--only encoding,serving] [--threads 1]"""
import argparse, tempfile
from pathlib import Path
from harness import SECTIONS, ON_REQUEST, run
from sections import BENCHES
import report

HERE = Path(__file__).parent

def options(argv=None) -> tuple[argparse.Namespace, tuple]:
    "The options, and the sections they ask for."
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='smaller sizes (recorded in the results)')
    p.add_argument('--only', default=None, help=f"comma-separated sections of {', '.join(SECTIONS + ON_REQUEST)}")
    p.add_argument('--threads', type=int, default=1, help='torch (and FAISS) threads for every section')
    p.add_argument('--hnsw-items', type=int, default=200_000, help='items in the HNSW index (its build is slow on 2 cores)')
    p.add_argument('--catalogue-vectors', default='gaussian', choices=['gaussian', 'real+noise', 'clustered'],
                   help="catalogue: realistic vectors (the real MiniLM vectors' Gaussian, or real vectors plus noise) or the older clean clusters")
    p.add_argument('--data-dir', default=str(Path(tempfile.gettempdir())/'transferrec-bench'), help='where the synthetic CSV is written once')
    p.add_argument('--data-protocol', default='random', choices=['random', 'loo', 'cold'])
    p.add_argument('--out', default=str(HERE), help='folder for results.json and results.md')
    p.add_argument('--markdown-only', action='store_true', help='only rewrite results.md from results.json')
    a = p.parse_args(argv)
    only = SECTIONS if not a.only else tuple(s.strip() for s in a.only.split(','))
    bad = [s for s in only if s not in SECTIONS + ON_REQUEST]
    if bad: p.error(f"unknown section(s) {bad}; choose from {SECTIONS + ON_REQUEST}")
    return a, only

def main():
    a, only = options()
    out = Path(a.out)
    if a.markdown_only: return report.write_markdown(out)
    res = run({name: BENCHES[name] for name in only}, a, out)
    report.write_markdown(out, res)
    print(f'wrote {out/"results.json"} and {out/"results.md"} in {res["seconds"]:.0f} s')

if __name__ == '__main__': main()
