import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import pytest

@pytest.fixture(scope='session')
def ml100k():
    from transferrec.data import load_movielens
    return load_movielens('ml-100k')
