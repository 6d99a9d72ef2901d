"""The timing harness of `benchmarks/speed.py`: the sections it knows and their targets, timing helpers, the machine record,
running a section (or a measurement in a fresh child process) and writing results.json."""
import argparse, contextlib, gc, json, os, platform, resource, subprocess, sys, tempfile, time, traceback
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import numpy as np, torch
from transferrec.core import atomic_write, machine_info

SECTIONS = ('encoding', 'finetune', 'serving', 'catalogue', 'data', 'distributed')   # what `make bench` runs
ON_REQUEST = ('truncation',)                                                      # run only when named with --only

# the targets of the speed benchmarks, read by the sections, their text in the report and the report's summary table
T = dict(encode_fp32=1.0, encode_int8=1.8, int8_quality=0.02, cross_encoder=3.0, recommend_p50_ms=5.0, all_users_s=2.0,
         index_p50_ms=10.0, index_recall=0.95, index_build_s=300.0, data_s=90.0, data_mb=4096.0, same_quality=0.05,
         bench_s=1800.0)

def load() -> list: return [round(x, 2) for x in os.getloadavg()]

def median(xs) -> float: return float(np.median(xs))

def rss_mb() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def alternate(sides: dict, rounds: int, warmup: int=1, cpu: dict|None=None) -> dict:
    "Wall time of each side, `rounds` times, alternating (the order flips every round) after `warmup` untimed calls of each."
    for f in sides.values():
        for _ in range(warmup): f()
    times = {k: [] for k in sides}
    if cpu is not None: cpu.update({k: [] for k in sides})   # and CPU time of this process, when asked
    names = list(sides)
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            c0, t0 = time.process_time(), time.perf_counter(); sides[k]()
            times[k].append(time.perf_counter() - t0)
            if cpu is not None: cpu[k].append(time.process_time() - c0)
    return times

def machine_record() -> dict:
    "`transferrec.core.machine_info` plus what the report names: the CPU model, memory, GPU and the compared libraries' versions."
    m = machine_info()
    m['cpu'] = platform.processor() or m['machine']
    with contextlib.suppress(OSError, StopIteration):
        m['cpu'] = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    m['memory_gb'] = None
    with contextlib.suppress(OSError, StopIteration):
        m['memory_gb'] = round(int(next(l.split()[1] for l in open('/proc/meminfo') if l.startswith('MemTotal'))) / 2**20, 1)
    m['gpu'] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    m['versions'] = {'python': m['python'], 'numpy': np.__version__, 'torch': m['torch'], 'transformers': m['transformers'],
                     'transferrec': m['transferrec']}
    for name in ('sentence_transformers', 'faiss', 'pandas', 'pyarrow'):
        with contextlib.suppress(ImportError): m['versions'][name] = __import__(name).__version__
    return m

def run_child(code: str, *args, timeout: float|None) -> dict:
    "Run Python `code` with `args` in a fresh process (its own imports and peak memory); the JSON object it printed last."
    r = subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, 'OMP_NUM_THREADS': str(torch.get_num_threads())})
    if r.returncode != 0: raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])

def file_parser(doc: str, size_mb: float, record: str) -> argparse.ArgumentParser:
    "The options of a benchmark that generates a big file and reads it: its size, the record it writes, where the file goes."
    p = argparse.ArgumentParser(description=doc.split('\n')[0])
    p.add_argument('--size-mb', type=float, default=size_mb, help=f'size of the generated file (default {size_mb:g}: the target)')
    p.add_argument('--out', default=str(Path(__file__).with_name(record)), help='where to write the result')
    p.add_argument('--tmp', default=None, help='folder for the generated file (default: the system temporary folder)')
    return p

def measure_generated_file(write, # write(path, size_mb) writes the file and returns a fact about it (a line number, a count)
                           name: str, # the file's name (its suffix may tell the reader the format)
                           child: str, # Python code that reads sys.argv[1] and prints one JSON object last
                           size_mb: float, tmp: str|None=None) -> tuple[dict, dict]:
    "Generate a file in a temporary folder and run `child` on it in a fresh process: the child's JSON, and the file's facts."
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        path = Path(d)/name
        t0 = time.perf_counter(); made = write(path, size_mb)
        facts = dict(file_mb=round(path.stat().st_size / 2**20, 1), made=made, generate_seconds=round(time.perf_counter() - t0, 1))
        print(f"wrote {facts['file_mb']:,.0f} MB in {facts['generate_seconds']:.0f} s; reading it in a child process ...", flush=True)
        return run_child(child, path, timeout=None), facts

def write_record(out: str|Path, res: dict):
    "Write a benchmark's result as JSON, atomically, with the date and the machine."
    res.update(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), machine=machine_info())
    with atomic_write(out, 'w') as f: f.write(json.dumps(res, indent=1) + '\n')

def run_section(name: str, bench, a, cpu: str) -> dict:
    "`bench(a)`'s results (or its error) with when it started, how long it took, on which CPU and under which load."
    print(f'[{time.strftime("%H:%M:%S")}] {name} (load {load()})', flush=True)
    before, t0, started = load(), time.perf_counter(), time.strftime('%Y-%m-%d %H:%M')
    try: r = bench(a)
    except Exception as e:
        traceback.print_exc()
        r = {'error': f'{type(e).__name__}: {str(e)[-500:]}'}
    r.update(date=started, load_before=before, load_after=load(), section_seconds=time.perf_counter() - t0, quick=a.quick,
             cpu=cpu, threads=torch.get_num_threads(), nice=os.nice(0))
    print(json.dumps({k: v for k, v in r.items() if k not in ('raw', 'seconds', 'sweep')}, default=str)[:1500], flush=True)
    gc.collect()
    return r

def read_results(out: Path) -> dict: return json.loads((Path(out)/'results.json').read_text())

def run(benches: dict, a, out: Path) -> dict:
    """Run each of `benches` (name -> function of the options `a`) on `a.threads` torch threads and write
    `out`/results.json; a section run earlier and not rerun keeps its result (all of them with --only, the on-request
    ones in a full run)."""
    torch.set_num_threads(a.threads)
    out.mkdir(parents=True, exist_ok=True)
    prev = read_results(out)['sections'] if (out/'results.json').exists() else {}
    kept = {k: v for k, v in prev.items() if a.only or k in ON_REQUEST}
    res = {'date': time.strftime('%Y-%m-%d %H:%M'), 'quick': a.quick, 'machine': machine_record(),
           'settings': {k: v for k, v in vars(a).items() if k != 'out'}, 'sections': kept}
    t_all = time.perf_counter()
    for name, bench in benches.items(): res['sections'][name] = run_section(name, bench, a, res['machine']['cpu'])
    res['seconds'] = time.perf_counter() - t_all
    res['peak_rss_mb'] = rss_mb()
    (out/'results.json').write_text(json.dumps(res, indent=1, default=str))
    return res
