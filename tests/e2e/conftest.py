import os

import pytest


@pytest.fixture
def restore_environ():
    """The local pipeline points boto3 and the handlers at its endpoints through os.environ,
    as Lambda would; put everything back for the tests that follow."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
