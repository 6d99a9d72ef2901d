import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import pytest

@pytest.fixture(scope='session')
def ml100k():
    from transferrec.data import load_movielens
    return load_movielens('ml-100k')


@pytest.fixture(scope='session')
def tiny_bert(tmp_path_factory):
    "A 2-layer, 32-wide BERT with random weights and the MiniLM tokenizer, saved as a model folder."
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    from transferrec.encoders import default_encoder_path
    path = tmp_path_factory.mktemp('tiny-bert')
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
