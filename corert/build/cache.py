"""The build cache: (parent image, instruction after substitution, content digest) -> the step's image id.

The parent is the image id, the digest of its config, which names its whole layer stack: change line 8
and step 8 gets a new image id, so every later key changes too, exactly docker's chain. Entries are small
files under <data root>/build-cache/ written by rename (a crash leaves no half entry); an entry whose
image was removed meanwhile is a miss and is dropped.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_key(parent_id: str, text: str, content: str = "") -> str:
    return hashlib.sha256(json.dumps([parent_id, text, content]).encode()).hexdigest()


class BuildCache:
    def __init__(self, data_root: Path) -> None:
        self.dir = Path(data_root) / "build-cache"

    def get(self, key: str, images) -> str | None:
        """The image id cached for `key`, if that image is still in the store `images`."""
        from corert.errors import ImageError

        path = self.dir / key
        try:
            image_id = path.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return images.get(image_id).id
        except ImageError:
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, image_id: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.dir / f".{key}.{os.getpid()}"
        tmp.write_text(image_id + "\n")
        os.rename(tmp, self.dir / key)
