"""The HTTP service end to end: a small trained run served by `transferrec serve` in a subprocess on a free
loopback port, queried over real HTTP; every bad request answers 4xx with a message; an item added at run time is
recommended; SIGTERM finishes the request in flight. Request loops are bounded and every call has a timeout."""
import importlib.util, json, os, signal, socket, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np, pandas as pd, pytest
httpx = pytest.importorskip('httpx')
from transferrec.core import DataError, free_port
from transferrec.data import synthetic, split
from transferrec.recommend import Recommender
import transferrec.serve as S

SMALL = dict(item_repr='text', epochs=6, patience=2, dim=32, max_len=20, progress=False)
START_S = 180          # the longest a server may take to load and warm up (a busy 2-core machine)


@pytest.fixture(scope='module')
def rec():
    data = split(synthetic(n_users=150, n_items=120, interactions_per_user=20, seed=2), 'loo')
    return Recommender('sequential', **SMALL).fit(data)


@pytest.fixture(scope='module')
def run(rec, tmp_path_factory):
    path = rec.save(tmp_path_factory.mktemp('serve')/'run')
    (path/'metrics.json').write_text('{"ndcg@10": 0.25}')   # a file of the run that Recommender.save does not write
    return path


def start_server(run, log, *options) -> tuple[subprocess.Popen, str]:
    "`transferrec serve --run RUN [options]` in a subprocess on a free port, logging to the file `log`; returned once GET /ready answers 200."
    port = free_port()
    cli = 'import sys; from transferrec.cli import main; sys.exit(main(sys.argv[1:]))'
    proc = subprocess.Popen([sys.executable, '-c', cli, 'serve', '--run', str(run), '--port', str(port), '--log-level', 'warning', *options],
                            stdout=open(log, 'wb'), stderr=subprocess.STDOUT)
    url, end = f'http://127.0.0.1:{port}', time.monotonic() + START_S
    while time.monotonic() < end:
        if proc.poll() is not None: pytest.fail(f"the server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + '/ready', timeout=5).status_code == 200: return proc, url
        except httpx.TransportError: pass
        time.sleep(0.1)
    proc.kill(); pytest.fail(f"the server was not ready within {START_S} s")


def stop_server(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(30)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait(10)


@pytest.fixture(scope='module')
def process(run, tmp_path_factory):
    "The server process of this module; the last test stops it with SIGTERM."
    log = tmp_path_factory.mktemp('log')/'serve.log'
    proc, url = start_server(run, log)
    yield proc, url, log
    stop_server(proc)


@pytest.fixture(scope='module')
def server(process):
    with httpx.Client(base_url=process[1], timeout=30) as client: yield client


@pytest.fixture(scope='module')
def user(rec): return int(rec.user_ids[3])


def test_health_ready_and_docs(server, rec):
    assert server.get('/health').json() == {'status': 'ok'}
    ready = server.get('/ready').json()
    assert ready['status'] == 'ready' and ready['n_items'] == len(rec.items) and ready['n_users'] == len(rec.user_ids)
    assert server.get('/docs').status_code == 200 and 'swagger' in server.get('/docs').text.lower()
    paths = server.get('/openapi.json').json()['paths']
    assert {'/recommend', '/items/{item_id}/similar', '/items', '/items/save', '/health', '/ready'} <= set(paths)


def test_recommend_a_user_a_history_and_a_text(server, rec, user):
    titles = dict(zip(rec.items['item_id'], rec.items['title']))
    out = server.post('/recommend', json={'user_id': user, 'k': 5}).json()['items']
    assert len(out) == 5 and all(r['title'] == titles[r['item_id']] for r in out)
    assert [r['score'] for r in out] == sorted((r['score'] for r in out), reverse=True)
    seen = set(rec.items['item_id'].to_numpy()[rec.histories[3]])
    assert not {r['item_id'] for r in out} & seen
    reasons = [b for r in out for b in r['because']]
    assert all(b['item_id'] in seen and b['title'] == titles[b['item_id']] for b in reasons)
    assert all(r['why'] for r in out) and all(f"{b['title']} [{b['item_id']}]" in r['why'] for r in out for b in r['because'])
    assert server.post('/recommend', json={'user_id': str(user), 'k': 5}).json()['items'] == out   # ids as strings too
    excluded = server.post('/recommend', json={'user_id': user, 'k': 5, 'exclude': [out[0]['item_id']]}).json()['items']
    assert len(excluded) == 5 and [r['item_id'] for r in excluded[:4]] == [r['item_id'] for r in out[1:]]
    plain = server.post('/recommend', json={'user_id': user, 'k': 5, 'explain': False}).json()['items']
    assert [r['item_id'] for r in plain] == [r['item_id'] for r in out] and not {'because', 'why'} & set(plain[0])
    hist = rec.items['item_id'].iloc[:4].tolist()
    assert len(server.post('/recommend', json={'history': hist, 'k': 3}).json()['items']) == 3
    by_text = server.post('/recommend', json={'text': 'ghost haunting crypt', 'k': 4}).json()['items']
    assert len(by_text) == 4 and 'because' not in by_text[0] and by_text[0]['why'] == 'close to the text you gave'


def test_similar_items(server, rec):
    item = int(rec.items['item_id'].iloc[0])
    out = server.get(f'/items/{item}/similar', params={'k': 4}).json()
    assert out['item'] == {'item_id': item, 'title': rec.items['title'].iloc[0]}
    assert len(out['items']) == 4 and item not in [r['item_id'] for r in out['items']]
    assert all(-1.0001 <= r['score'] <= 1.0001 for r in out['items'])   # cosine similarities


BAD = [  # (what, method, path, request options, status, fragment of the error)
    ('unknown user', 'POST', '/recommend', {'json': {'user_id': 99999}}, 400, 'unknown user id 99999'),
    ('user id of a wrong kind', 'POST', '/recommend', {'json': {'user_id': 'abc'}}, 400, 'user ids of this run are integers'),
    ('unknown items', 'POST', '/recommend', {'json': {'history': [1, 77777]}}, 400, 'unknown item id(s) [77777]'),
    ('unknown excluded item', 'POST', '/recommend', {'json': {'user_id': 1, 'exclude': [77777]}}, 400, 'unknown item id(s) [77777]'),
    ('empty history', 'POST', '/recommend', {'json': {'history': []}}, 400, 'history is empty'),
    ('empty text', 'POST', '/recommend', {'json': {'text': '  '}}, 400, 'text is empty'),
    ('no user', 'POST', '/recommend', {'json': {'k': 3}}, 400, 'exactly one of user_id, history or text'),
    ('two users', 'POST', '/recommend', {'json': {'user_id': 1, 'text': 'x'}}, 400, 'exactly one of'),
    ('k = 0', 'POST', '/recommend', {'json': {'user_id': 1, 'k': 0}}, 422, 'k: Input should be greater than or equal to 1'),
    ('k absurd', 'POST', '/recommend', {'json': {'user_id': 1, 'k': 10**9}}, 422, 'k: Input should be less than or equal to 1000'),
    ('k a string', 'POST', '/recommend', {'json': {'user_id': 1, 'k': 'ten'}}, 422, 'k: Input should be a valid integer'),
    ('k a flag', 'POST', '/recommend', {'json': {'user_id': 1, 'k': True}}, 422, 'k: Input should be a valid integer'),
    ('history not a list', 'POST', '/recommend', {'json': {'history': 5}}, 422, 'history: Input should be a valid array'),
    ('id a number with a fraction', 'POST', '/recommend', {'json': {'history': [1.5]}}, 422, 'an id is a JSON integer or string'),
    ('oversized text', 'POST', '/recommend', {'json': {'text': 'ghost ' * 1000}}, 422, 'text: String should have at most 2000'),
    ('misspelt field', 'POST', '/recommend', {'json': {'user': 1}}, 422, 'user: Extra inputs are not permitted'),
    ('a list, not an object', 'POST', '/recommend', {'json': [1, 2]}, 422, 'Input should be an object'),
    ('not sent as JSON', 'POST', '/recommend', {'content': b'user_id=1', 'headers': {'Content-Type': 'application/x-www-form-urlencoded'}}, 415, 'must be JSON'),
    ('malformed JSON', 'POST', '/recommend', {'content': b'{"user_id": 1,', 'headers': {'Content-Type': 'application/json'}}, 400, 'malformed JSON'),
    ('no body', 'POST', '/recommend', {}, 422, 'the request has no body'),
    ('declared body too large', 'POST', '/items', {'content': b'x' * 1_000_001}, 413, 'larger than the limit of 1,000,000 bytes'),
    ('streamed body too large', 'POST', '/items', {'content': iter([b' ' * 600_000, b' ' * 600_000])}, 413, 'larger than the limit'),
    ('unknown item', 'GET', '/items/77777/similar', {}, 404, 'unknown item id 77777'),
    ('similar k = 0', 'GET', '/items/1/similar', {'params': {'k': 0}}, 422, 'k: Input should be greater than or equal to 1'),
    ('existing item', 'POST', '/items', {'json': {'items': [{'item_id': 1, 'title': 'again'}]}}, 400, 'already in the catalogue'),
    ('item twice', 'POST', '/items', {'json': {'items': [{'item_id': 8001, 'title': 'a'}, {'item_id': 8001, 'title': 'b'}]}}, 400, 'more than once'),
    ('item without title', 'POST', '/items', {'json': {'items': [{'item_id': 8002}]}}, 422, 'items.0.title: Field required'),
    ('item column a list', 'POST', '/items', {'json': {'items': [{'item_id': 8003, 'title': 't', 'genres': ['a']}]}}, 422, 'a text or a number'),
    ('no items', 'POST', '/items', {'json': {'items': []}}, 422, 'items: List should have at least 1 item'),
    ('unknown path', 'GET', '/recommendations', {}, 404, 'no such endpoint: GET /recommendations'),
    ('wrong method', 'GET', '/recommend', {}, 405, 'GET is not allowed on /recommend; use POST'),
]

@pytest.mark.parametrize('what,method,path,options,status,fragment', BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_4xx_with_a_message(server, what, method, path, options, status, fragment):
    r = server.request(method, path, **options)
    assert r.status_code == status, (what, r.status_code, r.text)
    assert r.headers['content-type'].startswith('application/json')
    error = r.json()['error']
    assert fragment in error and 'Traceback' not in error, (what, error)


def test_an_added_item_is_recommended_and_saved(server, rec, run):
    "An item whose text is that of the best match for a history is recommended for that history as soon as it is added."
    hist = rec.items['item_id'].to_numpy()[rec.histories[5]].tolist()
    best = server.post('/recommend', json={'history': hist, 'k': 1, 'explain': False}).json()['items'][0]['item_id']
    row = rec.items.set_index('item_id').loc[best]
    new = {'item_id': 5001, 'title': row['title'], 'year': int(row['year']), 'genres': row['genres']}
    r = server.post('/items', json={'items': [new]})
    assert r.status_code == 201 and r.json() == {'added': [{'item_id': 5001, 'title': row['title']}], 'n_items': len(rec.items) + 1}
    top = server.post('/recommend', json={'history': hist, 'k': 3}).json()['items']
    assert 5001 in [t['item_id'] for t in top]
    assert server.get('/items/5001/similar', params={'k': 1}).json()['items'][0]['item_id'] == best   # the same text
    saved = server.post('/items/save')
    assert saved.status_code == 200 and saved.json()['n_items'] == len(rec.items) + 1
    back = Recommender.load(run)
    assert 5001 in set(back.items['item_id']) and json.loads((run/'metrics.json').read_text()) == {'ndcg@10': 0.25}


def test_concurrent_requests(server, user):
    bodies = [{'user_id': user, 'k': 5}, {'history': [1, 2, 3], 'k': 5}, {'text': 'galaxy rocket', 'k': 5}, {'user_id': -5}] * 12
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda b: server.post('/recommend', json=b).status_code, bodies))
    assert codes.count(200) == 36 and codes.count(400) == 12


def test_timeout_answers_503(rec):
    "A new text runs the encoder on the model thread, within the timeout; a known user is answered at once, in milliseconds."
    with S.ServerThread(S.create_app(rec, timeout=1e-6)) as srv:
        r = httpx.post(srv.url + '/recommend', json={'text': 'a text this server never read'}, timeout=30)
        assert r.status_code == 503 and 'took longer than' in r.json()['error'] and r.headers['retry-after'] == '1'
        assert httpx.get(srv.url + '/health', timeout=30).status_code == 200
        assert httpx.post(srv.url + '/recommend', json={'user_id': int(rec.user_ids[0])}, timeout=30).status_code == 200


def test_several_workers_refuse_changes(run, monkeypatch):
    "Each worker process builds its app from the environment; with several, the catalogue cannot change."
    monkeypatch.setenv(S.ENV_OPTIONS, json.dumps({'source': str(run), 'allow_changes': False}))
    with S.ServerThread(S.app_from_environment()) as srv:
        r = httpx.post(srv.url + '/items', json={'items': [{'item_id': 6001, 'title': 'x'}]}, timeout=30)
        assert r.status_code == 409 and 'one worker' in r.json()['error']
        assert httpx.post(srv.url + '/items/save', timeout=30).status_code == 409


def memory_kb(pid: int) -> dict:
    "A process's memory from /proc/PID/smaps_rollup, in kB: Rss, Pss, Anonymous, Pss_Anon, ..."
    lines = open(f'/proc/{pid}/smaps_rollup').read().splitlines()[1:]
    return {k: int(v.split()[0]) for k, v in (line.split(':', 1) for line in lines)}


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc')
def test_forked_workers_share_the_run_and_stop_together(run, tmp_path, user):
    "Two workers forked after the run is loaded: both answer, they share the parent's memory, SIGTERM ends them all."
    proc, url = start_server(run, tmp_path/'workers.log', '--workers', '2')
    try:
        kids = [int(p) for p in open(f'/proc/{proc.pid}/task/{proc.pid}/children').read().split()]
        assert len(kids) == 2, kids
        with httpx.Client(base_url=url, timeout=30) as client, ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: client.post('/recommend', json={'user_id': user, 'k': 3}), range(16)))
            assert [a.status_code for a in answers] == [200] * 16 and len({a.text for a in answers}) == 1   # the same model
            assert client.post('/items', json={'items': [{'item_id': 7001, 'title': 'x'}]}).status_code == 409
        for pid in kids:   # the loaded run is the parent's memory, not a copy: most of a worker's private data is shared
            m = memory_kb(pid)
            assert m['Pss_Anon'] < 0.75 * m['Anonymous'], (pid, m)
    finally: stop_server(proc)
    assert proc.returncode in (0, -signal.SIGTERM)
    for pid in kids: assert not os.path.exists(f'/proc/{pid}') or 'zombie' in open(f'/proc/{pid}/status').read().lower()


def test_serve_refuses_a_bad_run_or_a_busy_port(run, tmp_path):
    with pytest.raises(DataError, match='does not exist'): S.serve(tmp_path/'nowhere')
    with pytest.raises(DataError, match='workers must be a positive integer'): S.serve(run, workers=0)
    with pytest.raises(DataError, match='threads must be a positive integer'): S.serve(run, threads=0)
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0)); busy.listen()
        with pytest.raises(DataError, match='cannot listen on 127.0.0.1'): S.serve(run, port=busy.getsockname()[1])


def test_the_command_line_has_serve(capsys):
    from transferrec.cli import parser
    args = parser().parse_args(['serve', '--run', 'runs/seq'])
    assert (args.host, args.port, args.workers, args.timeout) == ('127.0.0.1', 8000, 1, 10.0)
    with pytest.raises(SystemExit) as e: parser().parse_args(['serve', '--help'])
    assert e.value.code == 0 and 'example: transferrec serve --run' in capsys.readouterr().out


def test_missing_extra_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'fastapi', None)   # as if FastAPI were not installed
    spec = importlib.util.spec_from_file_location('transferrec.serve_without_fastapi', S.__file__)
    with pytest.raises(DataError, match=r"pip install 'transferrec\[serve\]'"): spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_sigterm_finishes_the_request_in_flight(process, user):
    "SIGTERM stops new connections at once and answers the request already being received, then the process ends."
    proc, url, log = process      # last in this file: it stops the module's server
    port = int(url.rsplit(':', 1)[1])
    body = json.dumps({'user_id': user, 'k': 3}).encode()
    head = b'POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n' % len(body)
    with socket.create_connection(('127.0.0.1', port), timeout=30) as s:
        s.sendall(head + body[:5]); time.sleep(0.5)        # the request is in flight: headers and part of the body
        proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 20
        while time.monotonic() < end:                       # the listening socket closes
            try: socket.create_connection(('127.0.0.1', port), timeout=2).close(); time.sleep(0.1)
            except OSError: break
        else: pytest.fail('the server still accepts connections 20 s after SIGTERM')
        s.sendall(body[5:])
        answer = b''
        while chunk := s.recv(65536): answer += chunk
    status, _, payload = answer.partition(b'\r\n\r\n')
    assert status.startswith(b'HTTP/1.1 200'), answer[:300]
    assert len(json.loads(payload)['items']) == 3
    assert proc.wait(30) in (0, -signal.SIGTERM)   # uvicorn re-raises the signal after its graceful shutdown
    assert 'Traceback' not in log.read_text()
