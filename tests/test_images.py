"""Image items: vision encoders, encode_images (batching, cache, errors), CLIP's shared space, and the sequential strategy's
item_repr 'image' and 'text+image' end to end, all with tiny random-weight models built here and generated pictures."""
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from transferrec.core import DataError, torch_threads
from transferrec.data import from_dataframes, split, synthetic
from transferrec.encoders import load_encoder, encode_texts, export_encoder
from transferrec.images import (encode_images, item_content, query_content, read_image, shape_image, shape_images,
                                tiny_vision_model)

WORDS = ('red', 'green', 'blue', 'yellow', 'purple', 'cyan', 'circle', 'square', 'triangle')


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "Tiny models: one torch thread is fastest on a small shared machine."
    with torch_threads(1): yield


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('vision')
    return {k: tiny_vision_model(root/k, k, words=WORDS) for k in ('vit', 'resnet', 'clip')}


@pytest.fixture(scope='module')
def catalogue(tmp_path_factory):
    "A synthetic dataset whose items have pictures coloured by genre, split leave-one-out."
    base = synthetic(n_users=120, n_items=60, interactions_per_user=15, seed=5)
    items = shape_images(base.items.drop(columns='item_idx'), tmp_path_factory.mktemp('pictures'), seed=5)
    ds = from_dataframes(base.interactions[['user_id', 'item_id', 'rating', 'timestamp']], items, name='pictures')
    return split(ds, 'loo')


def test_load_vision_and_clip(folders):
    vit, res, clip = (load_encoder(folders[k]) for k in ('vit', 'resnet', 'clip'))
    assert (vit.modality, vit.pooling, vit.dim, vit.tokenizer) == ('image', 'cls', 32, None)
    assert (res.modality, res.pooling, res.dim) == ('image', 'pooler', 32)
    assert (clip.modality, clip.pooling, clip.dim) == ('text+image', 'projection', 32)
    assert clip.tokenizer is not None and clip.processor is not None
    with pytest.raises(DataError, match="pools with one of"): load_encoder(folders['vit'], pooling='last')
    with pytest.raises(DataError, match="pools with one of"): load_encoder(folders['clip'], pooling='mean')
    assert load_encoder(folders['vit'], pretrained=False, seed=1).fingerprint != vit.fingerprint
    with pytest.raises(DataError, match='only text encoders export'): export_encoder(vit, folders['vit'].parent/'out')


def test_encode_images_batches_and_inputs(folders, catalogue):
    vit = load_encoder(folders['vit'])
    paths = catalogue.dataset.items['image'].tolist()[:12]
    v = encode_images(paths, vit, batch_size=5, cache_dir=False, progress=False)
    assert v.shape == (12, 32) and v.dtype == np.float32 and np.isfinite(v).all()
    alone = np.concatenate([encode_images([p], vit, cache_dir=False, progress=False) for p in paths[:4]])
    np.testing.assert_allclose(v[:4], alone, atol=1e-5)
    np.testing.assert_allclose(encode_images([Image.open(p) for p in paths[:4]], vit, cache_dir=False, progress=False), v[:4], atol=1e-5)
    np.testing.assert_allclose(encode_images(paths[::-1], vit, cache_dir=False, progress=False), v[::-1], atol=1e-5)  # input order
    assert not np.allclose(v[0], v[1])


def test_encode_images_cache(folders, catalogue, tmp_path):
    vit = load_encoder(folders['vit'])
    paths = catalogue.dataset.items['image'].tolist()[:10]
    calls = []
    hook = vit.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        a = encode_images(paths, vit, batch_size=4, cache_dir=tmp_path, progress=False); first = len(calls)
        b = encode_images(paths, vit, batch_size=4, cache_dir=tmp_path, progress=False)
        assert (first, len(calls)) == (3, 3)                # 10 pictures in batches of 4, then all from the cache
        np.testing.assert_array_equal(a, b)
        f = tmp_path/'replaced.png'
        shape_image('red', 'circle', np.random.default_rng(0)).save(f); c1 = encode_images([f], vit, cache_dir=tmp_path, progress=False)
        shape_image('blue', 'square', np.random.default_rng(1)).save(f); c2 = encode_images([f], vit, cache_dir=tmp_path, progress=False)
        assert not np.allclose(c1, c2)                      # same name, new bytes: encoded afresh
        other = load_encoder(folders['vit'], pretrained=False, seed=3)   # other weights: another cache folder
        assert not np.allclose(encode_images(paths[:2], other, cache_dir=tmp_path, progress=False), a[:2])
    finally: hook.remove()


def test_encode_images_errors(folders, catalogue, tmp_path):
    vit = load_encoder(folders['vit'])
    good = catalogue.dataset.items['image'].tolist()[:2]
    missing = tmp_path/'nope.png'
    with pytest.raises(DataError, match=r"nope\.png' \(images\[2\]\) does not exist; fix the path"):
        encode_images(good + [missing], vit, cache_dir=False)
    broken = tmp_path/'broken.jpg'; broken.write_bytes(b'\xff\xd8 not a jpeg at all')
    with pytest.raises(DataError, match=r"broken\.jpg' \(images\[0\]\) is not a readable picture.*replace it"):
        encode_images([broken], vit, cache_dir=False)
    with pytest.raises(DataError, match=r"reads text, not pictures: load a vision model"): encode_images(good, load_encoder(), cache_dir=False)
    with pytest.raises(DataError, match='reads pictures, not text'): encode_texts(['a red circle'], vit, cache_dir=False)
    with pytest.raises(DataError, match='wrap a single one'): encode_images(good[0], vit)
    with pytest.raises(DataError, match='file path or a PIL image'): encode_images([3], vit)
    img, data = read_image(Image.new('RGBA', (9, 9)))
    assert img.mode == 'RGB' and data is None


def test_image_column(folders, catalogue):
    vit, text = load_encoder(folders['vit']), load_encoder()
    items = catalogue.dataset.items
    c = item_content(items, 'text+image', vit, text, progress=False)
    assert c.shape == (len(items), 384 + 32)
    np.testing.assert_allclose(np.linalg.norm(c[:, 384:], axis=1), 1, atol=1e-5)
    holes = items.assign(image=[None if i % 7 == 0 else p for i, p in enumerate(items['image'])])
    np.testing.assert_array_equal(item_content(holes, 'text+image', vit, text, progress=False)[::7, 384:], 0)
    with pytest.raises(DataError, match="items have no picture"): item_content(holes, 'image', vit)
    with pytest.raises(DataError, match="no 'image' column"): item_content(items.drop(columns='image'), 'image', vit)
    with pytest.raises(DataError, match='cannot read a text description'): query_content('red', 'image', vit)


def train_clip(enc, items, steps, seed=0):
    "CLIP's own contrastive loss on (picture, caption) pairs, one thread."
    torch.manual_seed(seed)
    pixels = enc.processor(images=[read_image(p)[0] for p in items['image']], return_tensors='pt')['pixel_values']
    tok = enc.tokenizer(items['caption'].tolist(), padding=True, return_tensors='pt')
    opt, gen = torch.optim.AdamW(enc.model.parameters(), lr=2e-3), torch.Generator().manual_seed(seed)
    enc.model.train()
    with torch_threads(1):
        for _ in range(steps):
            i = torch.randperm(len(items), generator=gen)[:32]
            loss = enc.model(input_ids=tok['input_ids'][i], attention_mask=tok['attention_mask'][i], pixel_values=pixels[i], return_loss=True).loss
            opt.zero_grad(); loss.backward(); opt.step()
    enc.model.eval()


def test_clip_text_query_finds_image_only_items(folders, tmp_path):
    "After a few contrastive steps a caption query ranks unseen pictures of what it names first; random weights do not."
    clip = load_encoder(folders['clip'])
    pairs = shape_images(synthetic(n_items=300, seed=3).items, tmp_path/'pairs', seed=3)
    shelf = shape_images(synthetic(n_items=120, seed=4).items, tmp_path/'shelf', seed=4).assign(title='')  # pictures only
    def precision():
        P = encode_images(shelf['image'].tolist(), clip, normalize=True, cache_dir=False, progress=False)
        queries = sorted(set(shelf['caption']))
        Q = encode_texts(queries, clip, normalize=True, cache_dir=False, progress=False)
        top = np.argsort(-(Q @ P.T), axis=1)[:, :5]
        return float(np.mean([(shelf['caption'].to_numpy()[t] == q).mean() for q, t in zip(queries, top)]))
    before = precision()
    train_clip(clip, pairs, steps=300)
    after = precision()
    assert before < 0.2 and after > 0.4, (before, after)   # chance ~0.06; colours alone would give ~1/3


SMALL = dict(epochs=3, patience=3, dim=16, max_len=10, progress=False)


@pytest.mark.parametrize('rep', ['image', 'text+image'])
def test_sequential_with_pictures_end_to_end(folders, catalogue, tmp_path, rep):
    from transferrec.recommend import Recommender
    from transferrec.metrics import evaluate
    rec = Recommender('sequential', item_repr=rep, image_model=str(folders['vit' if rep == 'text+image' else 'clip']), **SMALL)
    rec.fit(catalogue)
    assert rec.model.text_vectors.shape == (catalogue.n_items, (384 if rep == 'text+image' else 0) + 32)
    m = evaluate(rec, catalogue)
    assert np.isfinite(list(m.values())).all()
    uid = catalogue.dataset.user_ids[0]
    top = rec.recommend(user_id=uid, k=5)
    assert len(top) == 5
    by_text = rec.recommend(text='red circle', k=5)   # 'image' with CLIP: its text tower; 'text+image' with a ViT: the text half
    assert len(by_text) == 5
    back = Recommender.load(rec.save(tmp_path/'run'))
    np.testing.assert_allclose(back.score(np.arange(5)), rec.score(np.arange(5)), atol=1e-5)
    assert back.config['image_model'] == rec.config['image_model']
    new = pd.DataFrame({'item_id': [10_001], 'title': ['A new red thing'], 'genres': ['Sci-Fi'],
                        'image': [str(catalogue.dataset.items['image'][0])]})
    rec.add_items(new)
    assert rec.model.net.n_items == catalogue.n_items + 1


def test_picture_options_refused(folders):
    from transferrec.sequential import SequentialRecommender
    with pytest.raises(DataError, match='needs image_model='): SequentialRecommender('image')
    with pytest.raises(DataError, match="not 'text'"): SequentialRecommender('text', image_model=str(folders['vit']))
    with pytest.raises(DataError, match='text encoder'): SequentialRecommender('text+image', image_model=str(folders['vit']), trainable_layers=1)
    assert 'image_model' not in SequentialRecommender('text').config   # models without pictures keep their config as before
