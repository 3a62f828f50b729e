"""Staging's durability order (training/src/edge_train/staging.py): files renamed into place, then
the cache's filesystem synced once, then the manifest written; a crash never leaves a manifest that
vouches for a file the disk could lose."""

from __future__ import annotations

from training.src.edge_train import staging


def test_the_filesystem_is_synced_after_the_renames_and_before_the_manifest(tmp_path, container, monkeypatch) -> None:
    container.upload_blob("data/a.bin", b"a" * 10)
    container.upload_blob("data/b.bin", b"b" * 10)
    events: list[str] = []
    real_sync, real_save = staging._sync_filesystem, staging._Manifest.save
    cache = tmp_path / "cache"

    def sync(root):
        placed = sorted(p.name for p in (cache / "data").iterdir())
        events.append(
            f"sync with {placed} in place, manifest {'present' if (cache / staging.MANIFEST).exists() else 'absent'}"
        )
        real_sync(root)

    def save(self):
        events.append("manifest")
        real_save(self)

    monkeypatch.setattr(staging, "_sync_filesystem", sync)
    monkeypatch.setattr(staging._Manifest, "save", save)
    staging.stage_blobs(container, "data/", cache)
    assert events == ["sync with ['a.bin', 'b.bin'] in place, manifest absent", "manifest"]

    events.clear()
    staging.stage_blobs(container, "data/", cache)  # warm: nothing renamed, nothing to sync
    assert events == ["manifest"]
