"The speed benchmark's report: the committed tables are what `benchmarks/report.py` renders, and its verdicts."
import json, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'benchmarks'))   # the benchmark scripts import each other by name
import report

def test_results_md_is_rendered_from_results_json():
    "benchmarks/results.md is exactly what results.json renders to."
    res = json.loads((ROOT/'benchmarks'/'results.json').read_text())
    assert report.markdown(res) == (ROOT/'benchmarks'/'results.md').read_text()

def truncation(low, high, mean=0.0, seed_ndcg=0.1, users=100):
    return {'difference': {'mean': mean, 'low': low, 'high': high}, 'seed_inputs': {'valid_ndcg@10': seed_ndcg},
            'users': users, 'users_available': 943}

@pytest.mark.parametrize('low,high,expected', [(-0.004, 0.01, 'met'), (-0.03, -0.001, '**missed**')])
def test_same_quality_met_or_missed(low, high, expected):
    "Met when the whole interval lies above -5% of the seed's ndcg@10 (here -0.005), missed when it lies below zero."
    assert report.same_quality(truncation(low, high)) == expected

def test_same_quality_unresolved_says_how_many_users_it_needs():
    "An interval twice as wide as ±5% needs four times the users (width shrinks as 1/sqrt(users))."
    v = report.same_quality(truncation(-0.01, 0.01, users=100))   # half-width 0.01 = 2 x the tolerance 0.005
    assert v.startswith('not resolved') and 'about 400 users' in v and 'has 943' in v

def test_readme_targets_table_is_the_current_report():
    "The targets table stored in nbs/index.ipynb (and so in the README) is the one in benchmarks/results.md."
    report = (ROOT/'benchmarks'/'results.md').read_text().split('## Targets\n')[1].split('\n## ')[0]
    cells = json.loads((ROOT/'nbs'/'index.ipynb').read_text())['cells']
    shown = [''.join(o['data']['text/markdown']) for c in cells if 'results.md' in ''.join(c['source'])
             for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})]
    assert shown == [report], 'rerun the Speed and scale cell of nbs/index.ipynb, then `make readme`'
