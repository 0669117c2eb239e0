"""The fake hub (tests/fakehub.py) satisfies the real huggingface_hub client; only 127.0.0.1 is touched."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import get_hf_file_metadata, http_get

from fakehub import FakeHub, RequestLog

pytestmark = pytest.mark.timeout(30)

REPO = "acme/tiny-model"
SMALL = b'{"model_type": "tiny", "hidden_size": 8}\n'
BIG = bytes((i * 7 + 3) % 251 for i in range(300_000))  # LFS by size, several 64 KiB chunks
WEIGHTS = b"\x00\x01tiny weights\x02\x03"  # LFS by suffix although small
NESTED = b"nested text\n"
FILES = {"config.json": SMALL, "blob.dat": BIG, "model.safetensors": WEIGHTS, "sub/dir/notes.txt": NESTED}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def hub_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    # conftest sets HF_HUB_OFFLINE=1, which huggingface_hub reads once at import time
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def hub():
    with FakeHub() as running:
        yield running


@pytest.fixture
def commit(hub: FakeHub) -> str:
    return hub.add_repo(REPO, FILES)


def test_endpoint_is_loopback_and_commit_is_deterministic(hub: FakeHub, commit: str) -> None:
    assert hub.endpoint.startswith("http://127.0.0.1:")
    assert len(commit) == 40 and int(commit, 16) >= 0
    assert hub.add_repo("other/copy", dict(FILES)) == commit
    assert hub.add_repo("other/changed", {**FILES, "config.json": b"{}"}) != commit


def test_model_info_with_files_metadata(hub: FakeHub, commit: str) -> None:
    api = HfApi(endpoint=hub.endpoint)
    info = api.model_info(REPO, files_metadata=True, token=False)
    assert info.id == REPO and info.sha == commit
    assert info.private is False and info.gated is False
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == set(FILES)
    for name, content in FILES.items():
        assert siblings[name].size == len(content)
    assert siblings["config.json"].lfs is None
    assert siblings["config.json"].blob_id == git_blob_sha1(SMALL)
    assert siblings["sub/dir/notes.txt"].blob_id == git_blob_sha1(NESTED)
    for name in ("blob.dat", "model.safetensors"):
        lfs = siblings[name].lfs
        assert lfs is not None and lfs.sha256 == sha256(FILES[name]) and lfs.size == len(FILES[name])
        assert lfs.pointer_size > 0 and len(siblings[name].blob_id) == 40

    # without files_metadata only the names come back; revision=commit and "main" both resolve
    plain = api.model_info(REPO, token=False)
    assert plain.siblings[0].size is None and plain.sha == commit
    assert api.model_info(REPO, revision=commit, token=False).sha == commit
    assert api.model_info(REPO, revision="main", files_metadata=True, token=False).sha == commit
    assert hub.requests[0].path.startswith(f"/api/models/{REPO}")

    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch", token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/missing", token=False)


def test_hf_hub_download_into_standard_cache(hub: FakeHub, commit: str, tmp_path: Path) -> None:
    for name in ("config.json", "blob.dat", "sub/dir/notes.txt"):
        path = Path(hf_hub_download(REPO, name, cache_dir=tmp_path, endpoint=hub.endpoint, token=False))
        assert path.read_bytes() == FILES[name]
        assert path == tmp_path / "models--acme--tiny-model" / "snapshots" / commit / name
    assert (tmp_path / "models--acme--tiny-model" / "refs" / "main").read_text() == commit
    assert hub.bytes_served(REPO, "blob.dat") == len(BIG)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "nope.txt", cache_dir=tmp_path, endpoint=hub.endpoint, token=False)


def test_file_metadata_headers(hub: FakeHub, commit: str) -> None:
    url = hf_hub_url(REPO, "blob.dat", endpoint=hub.endpoint)
    meta = get_hf_file_metadata(url, token=False)
    assert (meta.commit_hash, meta.etag, meta.size) == (commit, sha256(BIG), len(BIG))
    assert meta.xet_file_data is None
    small = get_hf_file_metadata(hf_hub_url(REPO, "config.json", endpoint=hub.endpoint), token=False)
    assert (small.etag, small.size) == (git_blob_sha1(SMALL), len(SMALL))

    head = httpx2.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["X-Linked-Size"] == str(len(BIG)) and head.headers["X-Repo-Commit"] == commit
    assert head.headers["ETag"] == f'"{sha256(BIG)}"' and not any(k.lower().startswith("x-xet") for k in head.headers)

    part = httpx2.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == BIG[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(BIG)}"
    assert httpx2.get(url, headers={"Range": f"bytes={len(BIG)}-"}).status_code == 416
    by_commit = httpx2.get(hf_hub_url(REPO, "config.json", revision=commit, endpoint=hub.endpoint))
    assert by_commit.content == SMALL
    assert hub.bytes_served(REPO, "blob.dat") == 10  # HEADs and the 416 send no body


def test_http_get_resume_sends_range_and_only_the_rest(hub: FakeHub, commit: str) -> None:
    url = hf_hub_url(REPO, "blob.dat", endpoint=hub.endpoint)
    n = 100_000
    out = io.BytesIO(BIG[:n])
    out.seek(n)
    http_get(url, out, resume_size=n, headers={}, expected_size=len(BIG))
    assert out.getvalue() == BIG
    gets = hub.gets(REPO, "blob.dat")
    assert [g.range_header for g in gets] == [f"bytes={n}-"] and gets[0].status == 206
    assert hub.bytes_served(REPO, "blob.dat") == len(BIG) - n


def test_drop_after_is_resumed_by_the_client_without_refetching(hub: FakeHub) -> None:
    # huggingface_hub reads the body in DOWNLOAD_CHUNK_SIZE (10 MiB) pieces and only writes (hence resumes from)
    # whole pieces: drop right after the first one so the retry must ask for exactly the rest.
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    huge = (bytes(range(251)) * (chunk // 251 + 10_000))[: chunk + 300_000]
    hub.add_repo("acme/huge", {"huge.bin": huge})
    hub.drop_after("acme/huge", "huge.bin", chunk)
    out = io.BytesIO()
    http_get(hf_hub_url("acme/huge", "huge.bin", endpoint=hub.endpoint), out, headers={}, expected_size=len(huge))
    assert out.getvalue() == huge
    gets = hub.gets("acme/huge", "huge.bin")
    assert len(gets) == 2
    assert gets[0].range_header is None and gets[0].body_bytes_sent == chunk
    assert gets[1].range_header == f"bytes={chunk}-" and gets[1].status == 206
    assert hub.bytes_served("acme/huge", "huge.bin") == len(huge)  # no byte twice


def test_drop_inside_the_first_client_chunk_restarts_from_zero(hub: FakeHub, commit: str, tmp_path: Path) -> None:
    # Partial data short of a whole 10 MiB client chunk is discarded by huggingface_hub: the retry is a full GET.
    hub.drop_after(REPO, "blob.dat", 70_000)
    path = hf_hub_download(REPO, "blob.dat", cache_dir=tmp_path, endpoint=hub.endpoint, token=False)
    assert Path(path).read_bytes() == BIG
    gets = hub.gets(REPO, "blob.dat")
    assert [(g.range_header, g.status, g.body_bytes_sent) for g in gets] == [(None, 200, 70_000),
                                                                             (None, 200, len(BIG))]
    assert hub.bytes_served(REPO, "blob.dat") == len(BIG) + 70_000


def test_corrupt_serves_same_length_with_wrong_bytes(hub: FakeHub, commit: str, tmp_path: Path) -> None:
    hub.corrupt(REPO, "blob.dat", times=2)
    out = io.BytesIO()
    http_get(hf_hub_url(REPO, "blob.dat", endpoint=hub.endpoint), out, headers={}, expected_size=len(BIG))
    assert len(out.getvalue()) == len(BIG) and sha256(out.getvalue()) != sha256(BIG)
    path = Path(hf_hub_download(REPO, "blob.dat", cache_dir=tmp_path, endpoint=hub.endpoint, token=False))
    assert path.stat().st_size == len(BIG) and sha256(path.read_bytes()) != sha256(BIG)
    # faults are used up: the next GET is clean
    assert httpx2.get(hf_hub_url(REPO, "blob.dat", endpoint=hub.endpoint)).content == BIG


def test_gated_repo_needs_the_right_token(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo("acme/gated", {"config.json": SMALL, "model.safetensors": BIG}, gated=True, token="hf_good")
    api = HfApi(endpoint=hub.endpoint)

    with pytest.raises(GatedRepoError) as no_token:
        api.model_info("acme/gated", files_metadata=True, token=False)
    assert no_token.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as no_token_dl:
        hf_hub_download("acme/gated", "config.json", cache_dir=tmp_path, endpoint=hub.endpoint, token=False)
    assert no_token_dl.value.response.status_code == 401

    with pytest.raises(GatedRepoError) as wrong:
        api.model_info("acme/gated", token="hf_bad")
    assert wrong.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as wrong_dl:
        hf_hub_download("acme/gated", "config.json", cache_dir=tmp_path, endpoint=hub.endpoint, token="hf_bad")
    assert wrong_dl.value.response.status_code == 403

    info = api.model_info("acme/gated", files_metadata=True, token="hf_good")
    assert info.gated == "auto" and {s.rfilename for s in info.siblings} == {"config.json", "model.safetensors"}
    path = hf_hub_download("acme/gated", "model.safetensors", cache_dir=tmp_path, endpoint=hub.endpoint,
                           token="hf_good")
    assert Path(path).read_bytes() == BIG
    statuses = {r.status for r in hub.requests}
    assert {401, 403, 200} <= statuses


def test_offline_fails_fast_and_recovers(hub: FakeHub, commit: str) -> None:
    api = HfApi(endpoint=hub.endpoint)
    assert api.model_info(REPO, token=False).sha == commit  # leaves a keep-alive connection in the pool
    hub.set_offline(True)
    started = time.monotonic()
    with pytest.raises(httpx2.TransportError):
        api.model_info(REPO, token=False, timeout=5)
    with pytest.raises(httpx2.TransportError):
        http_get(hf_hub_url(REPO, "config.json", endpoint=hub.endpoint), io.BytesIO(), headers={},
                 _nb_retries=0)
    assert time.monotonic() - started < 3
    hub.set_offline(False)
    assert api.model_info(REPO, token=False).sha == commit


def test_slow_file_can_be_cancelled_mid_download(hub: FakeHub, commit: str) -> None:
    hub.slow(REPO, "blob.dat", 200_000)  # ~1.5 s for the whole file
    url = hf_hub_url(REPO, "blob.dat", endpoint=hub.endpoint)
    started = time.monotonic()
    got = 0
    with httpx2.Client(timeout=5) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes(chunk_size=8192):
            got += len(chunk)
            if got >= 20_000:
                break
    assert time.monotonic() - started < 1.0  # cancelled long before the body could have finished
    time.sleep(0.3)  # the server notices the closed socket at its next throttled write and gives up
    served = hub.bytes_served(REPO, "blob.dat")
    time.sleep(0.2)
    assert hub.bytes_served(REPO, "blob.dat") == served
    assert got <= served < len(BIG) // 2


def test_folder_repo_and_snapshot_download(hub: FakeHub, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name, content in FILES.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(content)
    commit = hub.add_repo("acme/folder", src)
    assert commit == hub.add_repo("acme/mapping", FILES)
    tree = {f.path: f for f in HfApi(endpoint=hub.endpoint).list_repo_tree("acme/folder", recursive=True,
                                                                          token=False)}
    assert {"sub", "sub/dir"} <= set(tree) and tree["blob.dat"].lfs.sha256 == sha256(BIG)
    folder = Path(snapshot_download("acme/folder", cache_dir=tmp_path / "cache", endpoint=hub.endpoint,
                                    token=False))
    assert folder.name == commit
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == FILES


def test_request_log_shape(hub: FakeHub, commit: str) -> None:
    httpx2.get(hf_hub_url(REPO, "config.json", endpoint=hub.endpoint), headers={"Range": "bytes=0-"})
    (entry,) = hub.gets(REPO, "config.json")
    assert isinstance(entry, RequestLog)
    assert (entry.method, entry.range_header, entry.status, entry.body_bytes_sent) == ("GET", "bytes=0-", 206,
                                                                                       len(SMALL))
    assert entry.path == f"/{REPO}/resolve/main/config.json"


def test_concurrent_downloads(hub: FakeHub, commit: str) -> None:
    url = hf_hub_url(REPO, "blob.dat", endpoint=hub.endpoint)
    results: list[bytes] = []

    def fetch() -> None:
        out = io.BytesIO()
        http_get(url, out, headers={}, expected_size=len(BIG))
        results.append(out.getvalue())

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [BIG] * 4 and hub.bytes_served(REPO, "blob.dat") == 4 * len(BIG)
