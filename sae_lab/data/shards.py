"""Activation shards: WebDataset tar files of row blocks, plus manifest.json.

A shard set is one directory (or URL prefix) per (model, layer, hook):

    manifest.json            what was harvested, every shard's rows and sha256, statistics
    shard-000000.tar         WebDataset tar; one sample per block of rows:
        000000_00000.safetensors   acts [n, d_in] (float16 | bfloat16 | float32)
                                   token_ids [n] int32
                                   doc [n] int64    index of the document in the dataset
                                   pos [n] int32    index of the token in its document
                                                    (-1 for BOS/EOS/... when they are kept)
                                   header metadata: crc32 of the tensors' bytes

Rows are stored in corpus order, so the neighbours of a row with the same `doc` are its context.
Blocks hold `block_rows` rows (>= 1024; the last block of a shard may be shorter), so per-sample
overhead in the tar stream is negligible. Arrays are stored as safetensors (never pickle).

Reading, for the trainer and for the feature browser:

    read_manifest(source) -> dict          source: directory, manifest.json, or URL prefix
    iter_blocks(source, shards=None)       -> dicts {"acts", "token_ids", "doc", "pos" (tensors),
                                              "shard" (name), "block" (index in the shard)}
                                              in corpus order, every row exactly once
    read_shard(url, expected_rows)         one shard's blocks, checked (crc32, shapes, row count,
                                              and the manifest's sha256, hashed while streaming)
    verify(source)                         sha256 of every shard against the manifest

The sha256 of a shard is computed over the bytes the tar reader consumes; the shard's last block
is held back until the whole file has been hashed, so a shard swapped for another valid one
raises ShardError before the reader moves past it (its earlier blocks have been handed out).

A truncated or corrupt shard raises ShardError naming the shard, never a silent short read.
Sources may be local paths, file://, http(s):// (curl, through webdataset's gopen), gs://,
`pipe:COMMAND` with `{name}` standing for the file name
(e.g. `pipe:aws s3 cp s3://bucket/acts/{name} -`), or any other fsspec URL (s3:// with s3fs).

Writing: `ShardSetWriter` (used by `sae-lab harvest`) writes each shard under a temporary name and
renames it when complete, then rewrites the manifest atomically; a killed harvest therefore leaves
only complete shards listed, and resuming continues after them (once their sha256 is checked).
The writer holds DIR/.lock (flock) while it works: a second harvest into DIR is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from sae_lab.files import atomic_write_json
from sae_lab.version import __version__

MANIFEST = "manifest.json"
FORMAT = "sae_lab-shards/1"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
MIN_BLOCK_ROWS = 1024
BLOCK_KEYS = ("acts", "token_ids", "doc", "pos")
FROM_MANIFEST = "manifest"  # read_shard: take the sha256 from the manifest beside the shard


class ShardError(ValueError):
    """A shard or manifest that cannot be used; the message names it."""


# --- locations ---------------------------------------------------------------------------------


def is_local(source: str | os.PathLike) -> bool:
    scheme = urlparse(str(source)).scheme
    return scheme in ("", "file") or len(scheme) == 1  # a Windows drive letter is not a scheme


def local_path(source: str | os.PathLike) -> Path:
    s = str(source)
    return Path(url2pathname(urlparse(s).path)) if s.startswith("file:") else Path(s)


def join(source: str | os.PathLike, name: str) -> str:
    """The location of file `name` in the shard set at `source`."""
    s = str(source)
    if "{name}" in s:
        return s.replace("{name}", name)
    if is_local(s) and not s.startswith("file:"):
        return str(Path(s) / name)
    return s.rstrip("/") + "/" + name


def open_url(url: str) -> IO[bytes]:
    """A binary stream of a local path, file://, http(s)://, gs://, pipe: or fsspec URL."""
    import webdataset as wds

    if is_local(url):
        return open(local_path(url), "rb")
    if urlparse(url).scheme in wds.gopen_schemes:
        return wds.gopen(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


# --- manifest ----------------------------------------------------------------------------------


def read_manifest(source: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the shard set at `source` (a directory, its manifest.json, or a URL)."""
    s = str(source)
    url = s if s.endswith(".json") else join(s, MANIFEST)
    try:
        with open_url(url) as f:
            raw = f.read()
    except (OSError, ValueError) as e:
        hint = ""
        if is_local(s) and local_path(s).is_dir():
            layers = sorted(q.parent.name for q in local_path(s).glob(f"layer_*/{MANIFEST}"))
            if layers:
                hint = f" (harvest output: use one of its layer directories {layers})"
        raise ShardError(f"cannot read shard manifest {url}: {e}{hint}") from e
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"{url}: not a valid manifest ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"{url}: not an sae_lab shard manifest (expected format {FORMAT!r})")
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Atomic: a temporary file, fsync, then os.replace."""
    atomic_write_json(directory / MANIFEST, manifest, indent=1)


def shard_source(source: str | os.PathLike) -> str:
    """The shard-set prefix of `source` (a manifest.json path is replaced by its directory)."""
    s = str(source)
    if s.endswith(MANIFEST):
        return s[: -len(MANIFEST)].rstrip("/") or "."
    return s


# --- blocks ------------------------------------------------------------------------------------


def encode_block(acts: Tensor, token_ids: Tensor, doc: Tensor, pos: Tensor) -> bytes:
    """safetensors bytes of one block; the header carries a crc32 of the tensors' bytes."""
    tensors = {
        "acts": acts.contiguous(),
        "token_ids": token_ids.to(torch.int32).contiguous(),
        "doc": doc.to(torch.int64).contiguous(),
        "pos": pos.to(torch.int32).contiguous(),
    }
    return st_save(tensors, metadata={"crc32": str(_crc(tensors))})


def decode_block(data: bytes) -> dict[str, Tensor]:
    """Inverse of encode_block; raises ShardError when the crc32 does not match."""
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        tensors = st_load(data)
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, SafetensorError) as e:
        raise ShardError(f"unreadable block ({e})") from e
    missing = [k for k in BLOCK_KEYS if k not in tensors]
    if missing:
        raise ShardError(f"block lacks tensors {missing}")
    crc = header.get("__metadata__", {}).get("crc32")
    if crc is None or int(crc) != _crc(tensors):
        raise ShardError("block checksum mismatch (corrupt data)")
    return tensors


def _crc(tensors: dict[str, Tensor]) -> int:
    crc = 0
    for k in BLOCK_KEYS:
        t = tensors[k]
        crc = zlib.crc32(t.view(torch.uint8).numpy(), crc)
    return crc


def read_shard(url: str, expected_rows: int | None = None, d_in: int | None = None,
               dtype: str | None = None, name: str | None = None,
               sha256: str | None = FROM_MANIFEST) -> Iterator[dict[str, Any]]:
    """The blocks of one shard in order, each checked; errors name the shard.

    `sha256`: the digest the shard must have; by default looked up in the manifest beside it
    (when there is one), None to skip the check. The last block is yielded only once the row
    count and the digest have been checked.
    """
    from webdataset.tariterators import tar_file_iterator

    label = name or url
    if sha256 == FROM_MANIFEST:
        sha256 = _manifest_sha256(url)
    rows = 0
    held: dict[str, Any] | None = None
    try:
        raw = open_url(url)
    except (OSError, ValueError) as e:
        raise ShardError(f"shard {label}: cannot open ({e})") from e
    stream = _HashingReader(raw, url)
    try:
        for index, member in enumerate(tar_file_iterator(stream)):
            block = _check_block(member, label, d_in, dtype)
            rows += block["acts"].shape[0]
            if held is not None:
                yield held
            held = {**block, "shard": label, "block": index}
        while stream.read(1 << 20):  # tar padding after the last member: part of the digest
            pass
        raw.close()  # a pipe (curl, aws, ...) reports its exit status here
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ShardError(f"shard {label}: truncated, corrupt or unreadable ({e})") from e
    finally:
        try:
            raw.close()
        except OSError:
            pass  # already reported above, or an error is on its way
    if expected_rows is not None and rows != expected_rows:
        raise ShardError(
            f"shard {label}: holds {rows} rows, the manifest says {expected_rows} "
            "(truncated or corrupt shard)"
        )
    if sha256 is not None and stream.hexdigest() != sha256:
        raise ShardError(f"shard {label}: sha256 does not match the manifest (corrupt or "
                         "replaced by another file)")
    if held is not None:
        yield held



class _HashingReader:
    """A read-only stream that computes the sha256 of every byte read through it. It prints as
    the shard's path: webdataset appends the stream to its errors ("... @ STREAM")."""

    def __init__(self, f: IO[bytes], url: str) -> None:
        self.f, self.h, self.url = f, hashlib.sha256(), url

    def __repr__(self) -> str:
        return str(self.url)

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data

    def hexdigest(self) -> str:
        return self.h.hexdigest()


_MANIFEST_CACHE: dict[tuple[str, int], dict[str, str]] = {}


def _manifest_sha256(url: str) -> str | None:
    """The sha256 the manifest beside shard `url` lists for it (None: no manifest or entry)."""
    if "{name}" in url or url.startswith("pipe:"):
        return None
    prefix, _, base = url.rpartition("/")
    if is_local(url) and not url.startswith("file:"):
        p = Path(url)
        prefix, base = str(p.parent), p.name
    try:
        stamp = local_path(join(prefix, MANIFEST)).stat().st_mtime_ns if is_local(url) else 0
    except OSError:
        return None
    key = (prefix, stamp)
    if key not in _MANIFEST_CACHE:
        try:
            manifest = read_manifest(prefix)
        except ShardError:
            return None
        _MANIFEST_CACHE[key] = {e["name"]: e.get("sha256") for e in manifest["shards"]}
    return _MANIFEST_CACHE[key].get(base)


def _check_block(member: dict[str, Any], label: str, d_in: int | None,
                 dtype: str | None) -> dict[str, Tensor]:
    fname = member["fname"]
    if not fname.endswith(".safetensors"):
        raise ShardError(f"shard {label}: unexpected member {fname!r}")
    try:
        block = decode_block(member["data"])
    except ShardError as e:
        raise ShardError(f"shard {label}, {fname}: {e}") from e
    acts = block["acts"]
    n = acts.shape[0]
    if acts.ndim != 2 or any(block[k].shape != (n,) for k in BLOCK_KEYS[1:]):
        raise ShardError(f"shard {label}, {fname}: inconsistent block shapes")
    if d_in is not None and acts.shape[1] != d_in:
        raise ShardError(f"shard {label}: rows have d_in={acts.shape[1]}, manifest says "
                         f"d_in={d_in}")
    if dtype is not None and acts.dtype != DTYPES[dtype]:
        raise ShardError(f"shard {label}: rows are {str(acts.dtype).removeprefix('torch.')}, "
                         f"manifest says dtype={dtype}")
    return block


def iter_blocks(source: str | os.PathLike, shards: list[str] | None = None
                ) -> Iterator[dict[str, Any]]:
    """Every block of a shard set in corpus order (or of the named shards, in the given order)."""
    source = shard_source(source)
    manifest = read_manifest(source)
    entries = {s["name"]: s for s in manifest["shards"]}
    names = list(entries) if shards is None else shards
    for name in names:
        if name not in entries:
            raise ShardError(f"{source}: no shard {name!r} in the manifest")
        yield from read_shard(join(source, name), entries[name]["rows"], manifest["d_in"],
                              manifest["dtype"], name, entries[name].get("sha256"))


def verify(source: str | os.PathLike) -> int:
    """Check every shard's sha256 against the manifest; returns the number of rows checked."""
    source = shard_source(source)
    manifest = read_manifest(source)
    for entry in manifest["shards"]:
        h = hashlib.sha256()
        with open_url(join(source, entry["name"])) as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        if h.hexdigest() != entry["sha256"]:
            raise ShardError(f"shard {join(source, entry['name'])}: sha256 does not match the "
                             "manifest (corrupt or replaced)")
    return sum(e["rows"] for e in manifest["shards"])


# --- statistics --------------------------------------------------------------------------------


class RunningStats:
    """Sums for normalisation statistics, in float64, over every stored row."""

    def __init__(self, d_in: int) -> None:
        self.rows = 0
        self.sum = torch.zeros(d_in, dtype=torch.float64)
        self.sum_sq_norm = 0.0
        self.sum_norm = 0.0

    def update(self, acts: Tensor) -> float:
        """Add rows [n, d_in]; returns their summed squared norm (inf or nan if any row is)."""
        x = acts.float()
        norms = torch.linalg.vector_norm(x, dim=1).double()  # [n]
        sum_sq = norms.pow(2).sum().item()
        self.rows += x.shape[0]
        # Out of place: the writer may run under torch.inference_mode.
        self.sum = self.sum + x.sum(dim=0, dtype=torch.float64)
        self.sum_sq_norm += sum_sq
        self.sum_norm += norms.sum().item()
        return sum_sq

    def merge(self, other: RunningStats) -> None:
        self.rows += other.rows
        self.sum = self.sum + other.sum
        self.sum_sq_norm += other.sum_sq_norm
        self.sum_norm += other.sum_norm

    def to_dict(self) -> dict[str, Any]:
        n = max(self.rows, 1)
        mean = self.sum / n
        mean_sq_norm = self.sum_sq_norm / n
        return {
            "rows": self.rows,
            "mean_sq_norm": mean_sq_norm,
            "mean_norm": self.sum_norm / n,
            # E||x - mean||^2: the squared error of predicting the mean (FVU denominator per row).
            "var_total": max(mean_sq_norm - float(mean.pow(2).sum()), 0.0),
            "mean": mean.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunningStats:
        stats = cls(len(d["mean"]))
        stats.rows = d["rows"]
        stats.sum = torch.tensor(d["mean"], dtype=torch.float64) * d["rows"]
        stats.sum_sq_norm = d["mean_sq_norm"] * d["rows"]
        stats.sum_norm = d["mean_norm"] * d["rows"]
        return stats


# --- writing -----------------------------------------------------------------------------------


class ShardSetWriter:
    """Appends rows to one shard set; a shard is renamed into place and listed when complete.

    `header` holds what identifies the harvest (model, layer, hook, ...); resuming a directory
    whose manifest disagrees on any IDENTITY field is an error naming the field. The writer holds
    an exclusive lock on DIR/.lock until finish() or abort(), so a second harvest into the same
    directory is refused instead of interleaving shards. `overwrite` deletes the set's own files
    (manifest, shards, temporary files) once the lock is held; nothing else in DIR.
    """

    IDENTITY = ("model", "revision", "tokenizer", "dataset", "layer", "hook", "ctx_len",
                "dtype", "model_dtype", "block_rows", "shard_rows", "special_tokens")

    def __init__(self, directory: str | os.PathLike, header: dict[str, Any], dtype: str,
                 shard_rows: int, block_rows: int, overwrite: bool = False) -> None:
        if block_rows < MIN_BLOCK_ROWS:
            raise ShardError(f"block_rows={block_rows}: must be >= {MIN_BLOCK_ROWS}")
        if shard_rows < block_rows:
            raise ShardError(f"shard_rows={shard_rows}: must be >= block_rows={block_rows}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dtype, self.shard_rows, self.block_rows = dtype, shard_rows, block_rows
        self.manifest: dict[str, Any] = {
            "format": FORMAT, "sae_lab_version": __version__, **header, "dtype": dtype,
            "shard_rows": shard_rows,
            "block_rows": block_rows, "d_in": None, "tokens": 0, "complete": False,
            "shards": [], "stats": None,
        }
        self.stats: RunningStats | None = None
        self._lock = _DirLock(self.dir)
        try:
            if overwrite:
                for p in [self.dir / MANIFEST, *self.dir.glob("shard-*.tar")]:
                    p.unlink(missing_ok=True)
            self._resume()
        except BaseException:
            self._lock.release()
            raise
        self._pending: list[dict[str, Tensor]] = []
        self._pending_rows = 0
        self._tar: Any = None  # webdataset TarWriter of the shard being written
        self._file: _HashingFile | None = None
        self._tmp: Path | None = None
        self._shard_stats: RunningStats | None = None
        self._shard_rows = 0
        self._shard_blocks = 0

    @property
    def rows(self) -> int:
        """Rows stored in complete shards (and accepted into the current one)."""
        return self.manifest["tokens"] + self._shard_rows + self._pending_rows

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    def _resume(self) -> None:
        for stale in self.dir.glob(".*.tmp*"):
            stale.unlink()  # a shard or manifest being written when the harvest was killed
        if not (self.dir / MANIFEST).exists():
            return
        old = read_manifest(self.dir)
        for key in self.IDENTITY:
            if old.get(key) != self.manifest.get(key):
                raise ShardError(
                    f"{self.dir / MANIFEST}: {key}={old.get(key)!r} but this harvest has "
                    f"{key}={self.manifest.get(key)!r}; use another --out or --overwrite"
                )
        for entry in old["shards"]:
            path = self.dir / entry["name"]
            if not path.is_file():
                raise ShardError(f"{path}: listed in the manifest but missing")
            # A resumed set must hold what its manifest says: new shards are listed beside these.
            if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
                raise ShardError(f"shard {path}: sha256 does not match the manifest (corrupt or "
                                 "replaced by another file); use --overwrite to harvest again")
        self.manifest.update({k: old[k] for k in ("d_in", "tokens", "complete", "shards",
                                                   "stats")})
        if old["stats"] is not None:
            self.stats = RunningStats.from_dict(old["stats"])

    def add(self, start_row: int, acts: Tensor, token_ids: Tensor, doc: Tensor,
            pos: Tensor) -> None:
        """Rows start_row.. of the corpus-order stream; rows this set already holds are skipped."""
        skip = self.rows - start_row
        if skip < 0:
            raise ValueError(f"gap in rows: {self.dir} holds {self.rows}, got {start_row}")
        if skip >= acts.shape[0]:
            return
        if self.manifest["d_in"] is None:
            self.manifest["d_in"] = acts.shape[1]
        elif acts.shape[1] != self.manifest["d_in"]:
            raise ShardError(f"{self.dir}: rows of width {acts.shape[1]}, manifest d_in="
                             f"{self.manifest['d_in']}")
        block = {"acts": acts[skip:].to(DTYPES[self.dtype]), "token_ids": token_ids[skip:],
                 "doc": doc[skip:], "pos": pos[skip:]}
        self._pending.append(block)
        self._pending_rows += block["acts"].shape[0]
        while self._pending_rows >= self._next_block_rows():
            self._write_block(self._take(self._next_block_rows()))

    def finish(self) -> None:
        """Write what is left as the final (short) shard and mark the set complete."""
        while self._pending_rows:
            self._write_block(self._take(min(self._pending_rows, self._next_block_rows())))
        if self._tar is not None:
            self._close_shard()
        self.manifest["complete"] = True
        write_manifest(self.dir, self.manifest)
        self._lock.release()

    def abort(self) -> None:
        """Drop the shard being written (the manifest still lists every complete one).

        Called while another error is on its way: never raises, so that error is the one seen.
        """
        tar, file, tmp = self._tar, self._file, self._tmp
        self._tar = self._file = self._tmp = None
        for close in (getattr(tar, "close", None), getattr(file, "close", None)):
            try:
                if close is not None:
                    close()
            except Exception:
                pass  # already closed, or the disk error being reported
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        self._lock.release()

    # --- internals ---

    def _next_block_rows(self) -> int:
        return min(self.block_rows, self.shard_rows - self._shard_rows)

    def _take(self, n: int) -> dict[str, Tensor]:
        parts: dict[str, list[Tensor]] = {k: [] for k in BLOCK_KEYS}
        need = n
        while need:
            head = self._pending[0]
            m = head["acts"].shape[0]
            if m <= need:
                self._pending.pop(0)
                for k in BLOCK_KEYS:
                    parts[k].append(head[k])
                need -= m
            else:
                for k in BLOCK_KEYS:
                    parts[k].append(head[k][:need])
                    head[k] = head[k][need:]
                need = 0
        self._pending_rows -= n
        return {k: torch.cat(v) if len(v) > 1 else v[0] for k, v in parts.items()}

    def _write_block(self, block: dict[str, Tensor]) -> None:
        if self._tar is None:
            self._open_shard()
        if not math.isfinite(self._shard_stats.update(block["acts"])):
            raise ShardError(
                f"{self.dir}: non-finite activations after conversion to {self.dtype} "
                "(float16 overflows above 65504: use --dtype bfloat16 or float32)"
            )
        key = f"{len(self.manifest['shards']):06d}_{self._shard_blocks:05d}"
        data = encode_block(block["acts"], block["token_ids"], block["doc"], block["pos"])
        self._tar.write({"__key__": key, "safetensors": data})
        self._shard_rows += block["acts"].shape[0]
        self._shard_blocks += 1
        if self._shard_rows == self.shard_rows:
            self._close_shard()

    def _shard_name(self) -> str:
        return f"shard-{len(self.manifest['shards']):06d}.tar"

    def _open_shard(self) -> None:
        import webdataset as wds

        self._tmp = self.dir / f".{self._shard_name()}.tmp{os.getpid()}"
        self._file = _HashingFile(open(self._tmp, "wb"))
        # Fixed mtime: a shard's bytes depend only on its rows.
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=0)
        self._shard_stats = RunningStats(self.manifest["d_in"])
        self._shard_rows = self._shard_blocks = 0

    def _close_shard(self) -> None:
        assert self._tar is not None and self._tmp is not None
        tar, self._tar = self._tar, None  # closed once, even if closing fails (see abort)
        tar.close()
        file, self._file = self._file, None
        digest = file.close()
        name = self._shard_name()
        os.replace(self._tmp, self.dir / name)
        if self.stats is None:
            self.stats = RunningStats(self.manifest["d_in"])
        self.stats.merge(self._shard_stats)
        self.manifest["shards"].append({
            "name": name, "rows": self._shard_rows, "blocks": self._shard_blocks,
            "bytes": (self.dir / name).stat().st_size, "sha256": digest,
        })
        self.manifest["tokens"] += self._shard_rows
        self.manifest["stats"] = self.stats.to_dict()
        write_manifest(self.dir, self.manifest)
        self._tar = self._tmp = self._file = self._shard_stats = None
        self._shard_rows = self._shard_blocks = 0


class _DirLock:
    """An exclusive, non-blocking lock on directory/.lock; release() deletes the file."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".lock"
        self.f: IO[str] | None = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; harvests there are not guarded
            return
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The holder before us may have deleted the file after we opened it: then our lock
            # is on a dead file and someone else may hold the new one.
            if os.fstat(self.f.fileno()).st_ino != os.stat(self.path).st_ino:
                raise OSError("lock file replaced")
        except OSError:
            self.f.seek(0)
            who = self.f.read().strip() or "?"
            self.f.close()
            self.f = None
            raise ShardError(f"{directory}: another harvest (pid {who}) is writing here; wait "
                             "for it or use another --out") from None
        self.f.seek(0)
        self.f.truncate()
        self.f.write(f"{os.getpid()}\n")
        self.f.flush()

    def release(self) -> None:
        if self.f is not None:
            self.path.unlink(missing_ok=True)  # while still held: see the inode check above
            self.f.close()
            self.f = None


class _HashingFile:
    """A write-only file that computes its sha256 on the way, and fsyncs on close."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.h = f, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> str:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        return self.h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()

