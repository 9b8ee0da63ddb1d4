"""Which chunk and bundle stores the settings choose, and the mistakes they
refuse before anything is served (no store is asked here)."""

from __future__ import annotations

import pytest

from sync.archive import Archive
from sync.settings import Settings
from sync.storage.files import FileBlobStore, FileChunkStore
from sync.storage.s3 import S3BlobStore, S3ChunkStore, S3Location


def settings_from(tmp_path, **env) -> Settings:
    return Settings.from_env({"WITNESS_DATA_DIR": str(tmp_path / "data"), "WITNESS_KEYS_DIR": str(tmp_path / "keys"),
                              **env})


def test_files_by_default_and_s3_when_named(tmp_path):
    files = Archive(settings_from(tmp_path))
    assert isinstance(files.chunks, FileChunkStore) and isinstance(files.blobs, FileBlobStore)
    assert files.chunks.root == tmp_path / "data" / "chunks" and files.blobs.root == tmp_path / "data" / "bundles"
    s3 = Archive(settings_from(tmp_path / "other", WITNESS_CHUNK_STORE="s3://footage/org-a/",
                               WITNESS_S3_ENDPOINT_URL="http://127.0.0.1:9"))
    assert isinstance(s3.chunks, S3ChunkStore) and isinstance(s3.blobs, S3BlobStore)
    assert (s3.chunks.bucket, s3.chunks.prefix) == ("footage", "org-a/")
    assert not (tmp_path / "other" / "data" / "chunks").exists()


@pytest.mark.parametrize("url, bucket, prefix", [
    ("s3://footage", "footage", ""), ("s3://footage/", "footage", ""), ("s3://footage/a/b", "footage", "a/b/")])
def test_an_s3_address_is_a_bucket_and_a_prefix(url, bucket, prefix):
    assert S3Location.parse(url) == S3Location(bucket, prefix)


@pytest.mark.parametrize("env, words", [
    ({"WITNESS_CHUNK_STORE": "/srv/chunks"}, "WITNESS_CHUNK_STORE must be s3://bucket/prefix"),
    ({"WITNESS_CHUNK_STORE": "s3://footage", "WITNESS_S3_ENDPOINT_URL": "127.0.0.1:8333"},
     "WITNESS_S3_ENDPOINT_URL must be an http:// or https:// URL"),
    ({"WITNESS_S3_ENDPOINT_URL": "http://127.0.0.1:8333"}, "WITNESS_CHUNK_STORE is not"),
])
def test_malformed_store_settings_are_refused_naming_the_variable(tmp_path, env, words):
    with pytest.raises(ValueError, match=words):
        settings_from(tmp_path, **env)


def test_s3_is_refused_while_chunk_files_are_still_in_the_data_folder(tmp_path):
    Archive(settings_from(tmp_path)).chunks.prepare("5f0c3f0e-8c8e-4a53-9d7f-3a0f2b9e1c11")
    with pytest.raises(ValueError, match="still holds chunk files"):
        Archive(settings_from(tmp_path, WITNESS_CHUNK_STORE="s3://footage/org-a"))


def test_log_witnesses_are_read_as_address_and_key_each():
    vkey = "clinic.example.edu/witness+757867b5+BPk/Blt9YmrTCWkagTpybvbl1Oe2w6fBYg4fFTibCmp1"
    settings = Settings.from_env({"WITNESS_LOG_WITNESSES": f"https://w.example/ {vkey},\nhttp://127.0.0.1:9 {vkey}"})
    assert settings.log_witnesses == (("https://w.example", vkey), ("http://127.0.0.1:9", vkey))
    assert Settings.from_env({}).log_witnesses == ()
    with pytest.raises(ValueError, match="WITNESS_LOG_WITNESSES"):
        Settings.from_env({"WITNESS_LOG_WITNESSES": vkey})  # no address
