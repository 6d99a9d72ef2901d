"""transferrec.encoders: loading, pooling, order, cache (hits, invalidation, corruption), decoders, errors."""
import os, warnings
import numpy as np, pytest, torch
from transformers import AutoTokenizer, BertConfig, BertModel, GPT2Config, GPT2Model, GPT2TokenizerFast
from transformers.utils import logging as hf_logging
from transferrec.core import DataError
from transferrec import encoders as E
from transferrec.encoders import Encoder, encode_texts, load_encoder, default_encoder_path, pool

hf_logging.disable_progress_bar()
TEXTS = ["Toy Story (1995). Genres: Animation, Children's, Comedy.", "Heat",
         "Star Wars (1977). Genres: Action, Adventure, Romance, Sci-Fi, War.", "", "GoldenEye (1995)",
         "A much longer text about a film that goes on and on, with a plot, a cast and a soundtrack worth a mention."]


@pytest.fixture(scope='module')
def enc(): return load_encoder()


class Counter:
    "Counts forward calls of a model through a hook."
    def __init__(self, model): self.n, self.h = 0, model.register_forward_hook(self)
    def __call__(self, *a): self.n += 1
    def __enter__(self): return self
    def __exit__(self, *a): self.h.remove()


def shards(cache): return sorted(cache.glob('encoders/*/shard-*.npz'))


def test_default_loads_and_encodes(enc, tmp_path):
    assert isinstance(enc, Encoder) and (enc.dim, enc.pooling, enc.decoder) == (384, 'mean', False)
    assert enc.name == str(default_encoder_path().resolve()) and default_encoder_path().name == 'model'
    v = encode_texts(TEXTS, enc, cache_dir=False, progress=False)
    assert v.shape == (len(TEXTS), 384) and v.dtype == np.float32 and np.isfinite(v).all()
    n = encode_texts(TEXTS, enc, normalize=True, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(n, v / np.linalg.norm(v, axis=1, keepdims=True), atol=1e-6)
    assert encode_texts([], enc, progress=False).shape == (0, 384)
    assert "dim=384" in repr(enc)


def test_order_independent_of_length_sorting(enc):
    batch = encode_texts(TEXTS, enc, batch_size=2, cache_dir=False, progress=False)
    alone = np.concatenate([encode_texts([t], enc, cache_dir=False, progress=False) for t in TEXTS])
    np.testing.assert_allclose(batch, alone, atol=1e-5)
    rev = encode_texts(TEXTS[::-1], enc, batch_size=3, cache_dir=False, progress=False)
    np.testing.assert_allclose(rev[::-1], batch, atol=1e-5)
    dup = encode_texts(["Heat", "Toy Story", "Heat"], enc, cache_dir=False, progress=False)
    np.testing.assert_array_equal(dup[0], dup[2])


def test_cache_hit_skips_model(enc, tmp_path):
    with Counter(enc.model) as c:
        a = encode_texts(TEXTS, enc, cache_dir=tmp_path, progress=False)
        first = c.n
        b = encode_texts(TEXTS, enc, cache_dir=tmp_path, progress=False)
        assert c.n == first > 0
    np.testing.assert_array_equal(a, b)
    assert len(shards(tmp_path)) == 1 and len(list(tmp_path.glob('encoders/*/identity.json'))) == 1
    assert not list(tmp_path.glob('encoders/*/.tmp-*'))


def test_default_cache_dir_from_env(enc, tmp_path, monkeypatch):
    monkeypatch.setenv('TRANSFERREC_CACHE', str(tmp_path))
    assert E.cache_home() == tmp_path
    encode_texts(TEXTS[:2], enc, progress=False)
    assert len(shards(tmp_path)) == 1


def test_changed_text_gets_new_vector(enc, tmp_path):
    a = encode_texts(TEXTS, enc, cache_dir=tmp_path, progress=False)
    changed = TEXTS[:2] + ["Star Wars (1977)"] + TEXTS[3:]
    with Counter(enc.model) as c:
        b = encode_texts(changed, enc, cache_dir=tmp_path, progress=False)
        assert c.n == 1  # only the changed text ran
    np.testing.assert_array_equal(np.delete(a, 2, 0), np.delete(b, 2, 0))
    np.testing.assert_allclose(b[2], encode_texts(["Star Wars (1977)"], enc, cache_dir=False, progress=False)[0], atol=1e-5)
    assert not np.allclose(a[2], b[2])


def test_changed_model_never_reuses_vectors(tmp_path):
    enc = load_encoder()
    a = encode_texts(TEXTS[:3], enc, cache_dir=tmp_path, progress=False)
    fp = enc.fingerprint
    with torch.no_grad(): enc.model.encoder.layer[0].output.dense.bias.add_(0.5)  # as a training step would
    assert enc.fingerprint != fp
    with Counter(enc.model) as c:
        b = encode_texts(TEXTS[:3], enc, cache_dir=tmp_path, progress=False)
        assert c.n == 1
    assert not np.allclose(a, b)
    enc.pooling = 'cls'
    with Counter(enc.model) as c:
        encode_texts(TEXTS[:3], enc, cache_dir=tmp_path, progress=False)
        encode_texts(TEXTS[:3], enc, max_length=8, cache_dir=tmp_path, progress=False)
        assert c.n == 2
    assert len(list(tmp_path.glob('encoders/*'))) == 4


@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'checksum', 'shape'])
def test_corrupt_cache_file_is_rebuilt(enc, tmp_path, damage):
    a = encode_texts(TEXTS, enc, cache_dir=tmp_path, progress=False)
    (path,) = shards(tmp_path)
    if damage == 'truncate': path.write_bytes(path.read_bytes()[:200])
    elif damage == 'garbage': path.write_bytes(os.urandom(4096))
    else:
        with np.load(path) as z: keys, vecs, check = z['keys'], z['vectors'], z['checksum']
        if damage == 'checksum': vecs = vecs.copy(); vecs[0, 0] += 1
        else: vecs = vecs[:, :10]; check = np.array(E.shard_checksum(keys, vecs))
        with open(path, 'wb') as f: np.savez(f, keys=keys, vectors=vecs, checksum=check)
    with pytest.warns(UserWarning, match='corrupt'):
        b = encode_texts(TEXTS, enc, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(a, b, atol=1e-6)
    with Counter(enc.model) as c, warnings.catch_warnings():
        warnings.simplefilter('error')
        np.testing.assert_array_equal(encode_texts(TEXTS, enc, cache_dir=tmp_path, progress=False), b)
        assert c.n == 0


def test_shards_are_compacted(enc, tmp_path, monkeypatch):
    monkeypatch.setattr(E.VectorCache, 'max_shards', 3)
    for i in range(5): encode_texts([f"film number {i}"], enc, cache_dir=tmp_path, progress=False)
    assert len(shards(tmp_path)) <= 3
    with Counter(enc.model) as c:
        encode_texts([f"film number {i}" for i in range(5)], enc, cache_dir=tmp_path, progress=False)
        assert c.n == 0


def test_random_init_is_really_random(enc):
    rnd = load_encoder(pretrained=False)
    assert not rnd.pretrained and type(rnd.model) is type(enc.model) and rnd.dim == enc.dim
    p, r = dict(enc.model.named_parameters()), dict(rnd.model.named_parameters())
    assert p.keys() == r.keys()
    for k in ['embeddings.word_embeddings.weight', 'encoder.layer.0.attention.self.query.weight']:
        assert p[k].shape == r[k].shape and not torch.allclose(p[k], r[k])
    assert rnd.fingerprint != enc.fingerprint
    assert load_encoder(pretrained=False).fingerprint == rnd.fingerprint  # seeded
    assert load_encoder(pretrained=False, seed=1).fingerprint != rnd.fingerprint
    state = torch.random.get_rng_state()
    load_encoder(pretrained=False)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone
    v = encode_texts(TEXTS[:3], rnd, cache_dir=False, progress=False)
    assert not np.allclose(v, encode_texts(TEXTS[:3], enc, cache_dir=False, progress=False), atol=1e-2)


@pytest.fixture(scope='module')
def gpt2_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    folder = tmp_path_factory.mktemp('gpt2')
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(TEXTS * 5, trainers.BpeTrainer(vocab_size=300, special_tokens=['<|endoftext|>'],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    eos = '<|endoftext|>'
    tok = GPT2TokenizerFast(tokenizer_object=bpe, eos_token=eos, bos_token=eos, unk_token=eos)
    assert tok.pad_token is None
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                         bos_token_id=0, eos_token_id=0)).save_pretrained(folder)
    return folder


def test_tiny_gpt2_by_path_uses_last_token(gpt2_dir):
    g = load_encoder(gpt2_dir)
    assert (g.decoder, g.pooling, g.dim, g.max_length) == (True, 'last', 32, 64)
    assert g.tokenizer.pad_token == '<|endoftext|>' and g.tokenizer.padding_side == 'right'
    batch = encode_texts(TEXTS, g, cache_dir=False, progress=False)
    alone = np.concatenate([encode_texts([t], g, cache_dir=False, progress=False) for t in TEXTS])
    np.testing.assert_allclose(batch, alone, atol=1e-5)
    # the last real token, checked against a plain forward pass of one text
    ids = g.tokenizer(TEXTS[1], return_tensors='pt')['input_ids']
    with torch.no_grad(): ref = g.model(input_ids=ids.to(g.device)).last_hidden_state[0, -1].cpu().numpy()
    np.testing.assert_allclose(batch[1], ref, atol=1e-5)
    mean = load_encoder(gpt2_dir, pooling='mean')
    assert not np.allclose(encode_texts(TEXTS[:2], mean, cache_dir=False, progress=False), batch[:2])


def test_tiny_bert_by_path_with_cls_pooling(enc, tmp_path, monkeypatch):
    enc.tokenizer.save_pretrained(tmp_path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(enc.tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(tmp_path)
    b = load_encoder(str(tmp_path), pooling='cls')
    assert (b.decoder, b.pooling, b.dim, b.max_length) == (False, 'cls', 32, 64)
    v = encode_texts(TEXTS, b, cache_dir=False, progress=False)
    x = b.tokenizer(TEXTS[0], return_tensors='pt')
    with torch.no_grad(): ref = b.model(**x.to(b.device)).last_hidden_state[0, 0].cpu().numpy()
    np.testing.assert_allclose(v[0], ref, atol=1e-5)
    alone = np.concatenate([encode_texts([t], b, cache_dir=False, progress=False) for t in TEXTS])
    np.testing.assert_allclose(v, alone, atol=1e-5)
    # a name or path given to encode_texts is loaded once and reused
    loads, load = [], E.load_encoder
    monkeypatch.setattr(E, 'load_encoder', lambda *a, **k: loads.append(a) or load(*a, **k))
    w1 = encode_texts(TEXTS[:2], str(tmp_path), cache_dir=False, progress=False)
    w2 = encode_texts(TEXTS[:2], tmp_path, cache_dir=False, progress=False)
    assert len(loads) == 1 and w1.shape == (2, 32) and np.array_equal(w1, w2)


def test_pool_rules():
    h = torch.arange(12.).reshape(2, 3, 2)
    m = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(h, m, 'mean'), torch.tensor([[1., 2.], [8., 9.]]))
    assert torch.equal(pool(h, m, 'cls'), torch.tensor([[0., 1.], [6., 7.]]))
    assert torch.equal(pool(h, m, 'last'), torch.tensor([[2., 3.], [10., 11.]]))


def test_quantized_agrees_with_fp32(enc):
    q = load_encoder(quantize=True)
    assert q.device.type == 'cpu'
    assert q.quantized and 'int8' in repr(q)
    a = encode_texts(TEXTS, enc, normalize=True, cache_dir=False, progress=False)
    b = encode_texts(TEXTS, q, normalize=True, cache_dir=False, progress=False)
    assert (a * b).sum(1).min() > 0.9


def test_missing_path_is_data_error():
    with pytest.raises(DataError, match=r"'/no/such/model' does not exist.*local model folder"):
        load_encoder('/no/such/model')
    with pytest.raises(DataError, match='does not exist'):
        encode_texts(['x'], model='./nowhere/at/all', progress=False)


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / 'notes.txt').write_text('hello')
    with pytest.raises(DataError, match=r"is not a Hugging Face model: it has no config\.json.*save_pretrained"):
        load_encoder(tmp_path)
    with pytest.raises(DataError, match='is a file, not a model folder'):
        load_encoder(tmp_path / 'notes.txt')
    (tmp_path / 'config.json').write_text('{}')
    with pytest.raises(DataError, match=str(tmp_path)):
        load_encoder(tmp_path)


def test_config_without_weights(tmp_path, enc):
    enc.model.config.save_pretrained(tmp_path)
    enc.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(DataError, match='pretrained=False'):
        load_encoder(tmp_path)
    assert load_encoder(tmp_path, pretrained=False).dim == 384


def test_unreachable_hub_name():
    with pytest.raises(DataError, match=r"'no-such-org/no-such-model'.*local model folder"):
        load_encoder('no-such-org/no-such-model')


def test_bad_arguments(enc):
    with pytest.raises(DataError, match='pooling must be one of'): load_encoder(pooling='median')
    with pytest.raises(DataError, match='wrap it'): encode_texts("Toy Story", enc)
    with pytest.raises(DataError, match=r'texts\[1\]'): encode_texts(["ok", float('nan')], enc)
    with pytest.raises(DataError, match='batch_size'): encode_texts(["ok"], enc, batch_size=0)
    with pytest.raises(DataError, match='model must be'): encode_texts(["ok"], model=42)
