"""Shared fixtures of the export tests."""

import pytest


@pytest.fixture
def fake_hf_api():
    """A stand-in for `huggingface_hub.HfApi` that records what it is asked to do: `(class, calls)`.

    `upload_folder` answers with the commit URL of the repo it was given (`/spaces/` for a Space).
    """
    calls = []

    class FakeHfApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            kind = "spaces/" if kwargs.get("repo_type") == "space" else ""
            return f"https://huggingface.co/{kind}{kwargs['repo_id']}/commit/0"

    return FakeHfApi, calls
