"""Reading a big Amazon-2018-format reviews file: peak memory and time of `transferrec.formats.read_dataset`.

Generates a reviews file of `--size-mb` megabytes (JSON lines in the 2018 layout, streamed to a temporary folder, with
review texts so that the four fields kept are a small part of each line and a few exact duplicates), then reads it in a
fresh child process that reports its peak resident memory (`ru_maxrss`) and the time taken. Writes
benchmarks/formats.json. The target: a 2 GB file peaks below 4 GB of memory.

    python benchmarks/formats.py                 # the 2 GB file of the target (needs about 2 GB of free disk)
    python benchmarks/formats.py --size-mb 100   # a quick check
"""
import os
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
import numpy as np
from harness import file_parser, measure_generated_file, write_record

TARGET_MB = 4096  # peak memory allowed for a 2 GB file
WORDS = ('great fit quality price arrived quickly works well would buy again broken after week love this color size '
         'smaller than expected good value for money recommend packaging cheap sturdy comfortable battery screen').split()

def write_reviews(path: Path, size_mb: float, seed: int=0) -> int:
    "Write about `size_mb` MB of 2018-format review lines to `path`, a chunk at a time; returns the number of lines."
    rng, target, written, lines = np.random.default_rng(seed), size_mb * 2**20, 0, 0
    texts = [' '.join(rng.choice(WORDS, rng.integers(20, 120))) for _ in range(2000)]
    n_users, n_items = max(10, int(target / 700 / 8)), max(10, int(target / 700 / 20))  # ~8 reviews per user, ~20 per item
    with open(path, 'w', encoding='utf-8') as f:
        while written < target:
            k = 20_000
            users, items = rng.integers(0, n_users, k), rng.integers(0, n_items, k)
            stars, times, text = rng.integers(1, 6, k), rng.integers(1_000_000_000, 1_530_000_000, k), rng.integers(0, len(texts), k)
            chunk = ''.join(
                f'{{"overall": {s}.0, "verified": true, "reviewTime": "01 1, 2015", "reviewerID": "A{u:012d}", '
                f'"asin": "B{i:09d}", "reviewerName": "Reader {u}", "reviewText": "{texts[x]}", "summary": "{texts[x][:30]}", '
                f'"unixReviewTime": {t}}}\n' for u, i, s, t, x in zip(users, items, stars, times, text))
            chunk += chunk[:chunk.index('\n') + 1]  # one exact duplicate per chunk, as crawled data has
            f.write(chunk); written += len(chunk.encode()); lines += k + 1
    return lines

CHILD = r'''
import json, resource, sys, time, warnings
from transferrec.formats import read_dataset
def rss_mb(key):  # VmRSS: resident now, VmHWM: the peak so far
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) / 1024
before = rss_mb('VmRSS')
t0 = time.perf_counter()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter('always')
    ds = read_dataset(sys.argv[1], progress=False)
seconds = time.perf_counter() - t0
print(json.dumps({'seconds': round(seconds, 2), 'peak_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  'rss_after_import_mb': round(before, 1), 'format': 'amazon2018', 'users': ds.n_users, 'items': ds.n_items,
                  'interactions': len(ds), 'warnings': [str(x.message) for x in w]}))
'''

def main(argv=None):
    a = file_parser(__doc__, 2048, 'formats.json').parse_args(argv)
    res, facts = measure_generated_file(write_reviews, 'Synthetic_5.json', CHILD, a.size_mb, a.tmp)
    file_mb = facts['file_mb']
    res.update(file_mb=file_mb, lines=facts['made'], generate_seconds=facts['generate_seconds'],
               mb_per_second=round(file_mb / res['seconds'], 1), target_peak_mb=TARGET_MB,
               target='2 GB file peaks below 4 GB' + ('' if file_mb >= 2000 else ' (not measured here: a smaller file)'),
               met=(res['peak_mb'] < TARGET_MB) if file_mb >= 2000 else None)
    write_record(a.out, res)
    print(f"read {res['interactions']:,} interactions in {res['seconds']:.1f} s ({res['mb_per_second']} MB/s), "
          f"peak memory {res['peak_mb']:,.0f} MB (resident after imports {res['rss_after_import_mb']:,.0f} MB) -> {a.out}")

if __name__ == '__main__': main()
