"""An fsspec filesystem that lists a synthetic archive: ``synth://archive-<N>`` holds N images, 1,000 per
folder (``archive-<N>/<folder>/img<i>.png``), each with a size, an ETag and a last-modified time, and no
bytes. For planning at scales that no test server here holds (``bench/scale.py``).

Ray's workers register it through ``ray.init(runtime_env={"worker_process_setup_hook":
"bench.synthfs.register"})``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from fsspec import AbstractFileSystem, register_implementation

PER_FOLDER = 1000
MODIFIED = datetime(2026, 1, 1, tzinfo=timezone.utc)


def register() -> None:
    register_implementation("synth", SyntheticFileSystem, clobber=True)


class SyntheticFileSystem(AbstractFileSystem):
    protocol = "synth"
    root_marker = ""

    @staticmethod
    def _parse(path: str) -> tuple[int, list[str]]:
        parts = SyntheticFileSystem._strip_protocol(path).strip("/").split("/")
        head = parts[0]
        if not head.startswith("archive-") or not head[len("archive-") :].isdigit():
            raise FileNotFoundError(path)
        return int(head[len("archive-") :]), parts[1:]

    @staticmethod
    def _file(n: int, i: int) -> dict:
        return {
            "name": f"archive-{n}/{i // PER_FOLDER:05d}/img{i:08d}.png",
            "size": 7500 + i % 97,
            "type": "file",
            "ETag": f'"{i:032x}"',
            "LastModified": MODIFIED,
        }

    def _folder_files(self, n: int, folder: int) -> list[dict]:
        return [self._file(n, i) for i in range(folder * PER_FOLDER, min(n, (folder + 1) * PER_FOLDER))]

    def info(self, path, **kwargs):
        n, rest = self._parse(path)
        if not rest:
            return {"name": f"archive-{n}", "size": 0, "type": "directory"}
        folder = int(rest[0]) if rest[0].isdigit() else -1
        if not 0 <= folder * PER_FOLDER < n:
            raise FileNotFoundError(path)
        if len(rest) == 1:
            return {"name": f"archive-{n}/{rest[0]}", "size": 0, "type": "directory"}
        i = int(rest[1][3:11]) if len(rest) == 2 and rest[1].startswith("img") else -1
        if not (folder * PER_FOLDER <= i < min(n, (folder + 1) * PER_FOLDER)):
            raise FileNotFoundError(path)
        return self._file(n, i)

    def ls(self, path, detail=True, **kwargs):
        n, rest = self._parse(path)
        if not rest:
            folders = (n + PER_FOLDER - 1) // PER_FOLDER
            entries = [{"name": f"archive-{n}/{f:05d}", "size": 0, "type": "directory"} for f in range(folders)]
        elif len(rest) == 1:
            entries = self._folder_files(n, int(rest[0]))
        else:
            entries = [self.info(path)]
        return entries if detail else [e["name"] for e in entries]

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        n, rest = self._parse(path)
        if not rest:
            folders = range((n + PER_FOLDER - 1) // PER_FOLDER)
        elif len(rest) == 1:
            folders = [int(rest[0])]
        else:
            info = self.info(path)
            return {info["name"]: info} if detail else [info["name"]]
        found = {e["name"]: e for f in folders for e in self._folder_files(n, f)}
        return found if detail else sorted(found)
