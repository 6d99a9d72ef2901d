"""A malformed line near the end of a big CSV: time and peak memory until `transferrec.data.load_csv` names the line.

Generates an interactions CSV of `--size-mb` megabytes (user_id,item_id,rating,timestamp; written a block at a time,
so generating needs no memory to speak of) whose last but one line has a field too many, then loads it in a fresh child
process that reports the error, the time it took and its peak resident memory (`ru_maxrss`) next to the resident
memory after the imports. The target: the error names the line, and the memory grows by less than three times the
file's size (what the rows before the bad line take once read, not copies of the file). Writes benchmarks/bad_csv.json.

    python benchmarks/bad_csv.py                 # the 1 GB file of the target (needs about 1 GB of free disk)
    python benchmarks/bad_csv.py --size-mb 100   # a quick check
"""
import os
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
import numpy as np
from harness import file_parser, measure_generated_file, write_record

GROWTH = 3  # peak memory may grow by at most this many times the file's size

def write_csv(path: Path, size_mb: float, seed: int=0) -> int:
    "Write about `size_mb` MB of interactions with one malformed line before the last; returns that line's number."
    rng, target = np.random.default_rng(seed), size_mb * 2**20
    k = 200_000
    with open(path, 'w') as f:
        f.write('user_id,item_id,rating,timestamp\n'); written, lines = 0, 1
        while written < target:
            block = np.column_stack([rng.integers(1, 1_000_000, k), rng.integers(1, 100_000, k), rng.integers(1, 6, k),
                                     rng.integers(900_000_000, 1_600_000_000, k)])
            text = '\n'.join(','.join(map(str, r)) for r in block.tolist()) + '\n'
            f.write(text); written += len(text); lines += k
        f.write('5,6,7,8,9\n'); f.write('1,2,3,881250949\n')  # a field too many, then one good line
    return lines + 1

CHILD = r'''
import json, resource, sys, time
from transferrec.core import DataError
from transferrec.data import load_csv
def rss_mb(key): return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) / 1024
before = rss_mb('VmRSS')
t0 = time.perf_counter()
try: load_csv(sys.argv[1]); error = None
except DataError as e: error = str(e)
print(json.dumps({'seconds': round(time.perf_counter() - t0, 2), 'rss_after_import_mb': round(before, 1),
                  'peak_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), 'error': error}))
'''

def main(argv=None):
    a = file_parser(__doc__, 1024, 'bad_csv.json').parse_args(argv)
    res, facts = measure_generated_file(write_csv, 'ratings.csv', CHILD, a.size_mb, a.tmp)
    file_mb, bad_line = facts['file_mb'], facts['made']
    growth = res['peak_mb'] - res['rss_after_import_mb']
    named = bool(res['error']) and f'line {bad_line}' in res['error']
    res.update(file_mb=file_mb, bad_line=bad_line, generate_seconds=facts['generate_seconds'], growth_mb=round(growth, 1),
               growth_per_file_mb=round(growth / file_mb, 2), line_named=named,
               target=f'the error names the line; memory grows by < {GROWTH}x the file' + ('' if file_mb >= 1000 else ' (a smaller file than the 1 GB target)'),
               met=named and growth < GROWTH * file_mb)
    write_record(a.out, res)
    print(f"{'named' if named else 'DID NOT NAME'} line {bad_line:,} after {res['seconds']:.1f} s; peak memory {res['peak_mb']:,.0f} MB "
          f"({growth:,.0f} MB over the {res['rss_after_import_mb']:,.0f} MB after imports, {growth / file_mb:.2f}x the file) -> {a.out}")
    print(res['error'])

if __name__ == '__main__': main()
