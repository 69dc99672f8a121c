"""Test-session settings: the frame cache of ``gpu_env.make`` lives in a temporary folder, so
the tests never write into the user's cache folder."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _frame_cache_in_a_temporary_folder(tmp_path_factory):
    previous = os.environ.get("SAM2CLICK_CACHE_DIR")
    os.environ["SAM2CLICK_CACHE_DIR"] = str(tmp_path_factory.mktemp("sam2click-cache"))
    yield
    if previous is None:
        os.environ.pop("SAM2CLICK_CACHE_DIR", None)
    else:
        os.environ["SAM2CLICK_CACHE_DIR"] = previous
