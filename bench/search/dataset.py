#!/usr/bin/env python3
"""The search benchmark's dataset: a Lance table of clustered float32 vectors with a caption
and metadata columns, an IVF_PQ index on the vectors, seeded query vectors and their exact
top-k neighbours.

What it owns: generating rows, writing the table into a folder that the bench origin serves
as a bucket, building the index, and the ground truth (`queries.npy`, `gt.npy`,
`gt_dist.npy`, `dataset.json`). What it does not: serving or measuring (see run.py).

Rows come from `clusters` Gaussian clusters of uneven size and spread (so that IVF partitions
are uneven, as with real embeddings), each varying mostly along a few shared directions (a
low intrinsic dimension, as embeddings have) and overlapping its neighbours, so that recall
grows with nprobes and with refinement rather than being all or nothing. Queries are drawn the way rows are (near a cluster
centre) but are not rows. Every chunk of rows has its own seeded generator, so the table is
the same for a seed whatever the chunk size, and the neighbours are found while the rows
stream into the writer: float32 distances pick a few candidates per chunk, float64
distances over those candidates decide, ties broken by the smaller id.

Re-running with the same parameters does nothing; `dataset.json` is written last and marks
a complete dataset.

    python3 bench/search/dataset.py --out DATA/origin/bench --preset 128
"""

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

PRESETS = {
    # name: (rows, dim)
    "128": (1_000_000, 128),
    "384": (200_000, 384),
}

# Rows generated (and written) per step; also the unit the per-chunk generators are keyed by.
CHUNK_ROWS = 50_000
# Candidates kept per query and chunk by the float32 pass, before the float64 decision.
CANDIDATE_FACTOR = 4
# Isotropic noise added to the latent variation (relative).
ISOTROPIC = 0.25
CATEGORIES = [
    "animals", "architecture", "art", "beach", "birds", "boats", "cars", "children", "city",
    "clouds", "concert", "cooking", "crowd", "dance", "desert", "documents", "dogs", "factory",
    "farm", "fashion", "fireworks", "flowers", "food", "forest", "games", "garden", "harbor",
    "highway", "ice", "interior", "lake", "library", "market", "medicine", "mountains",
    "museum", "night", "office", "park", "portrait", "rain", "river", "road", "school",
    "snow", "sport", "street", "sunset", "train", "underwater",
]
YEARS = (1995, 2025)


def vocabulary(seed: int, size: int = 2000) -> list[str]:
    """Made-up words (consonant-vowel syllables), the same for a seed."""
    rng = np.random.default_rng([seed, 7])
    onsets = list("bcdfghjklmnprstvwz") + ["br", "ch", "gr", "sh", "st", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou"]
    words: set[str] = set()
    while len(words) < size:
        n = int(rng.integers(2, 4))
        words.add("".join(onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))] for _ in range(n)))
    return sorted(words)


class Generator:
    """The rows of the table: cluster centres and shapes fixed by the seed, row chunk `c`
    drawn from its own generator `(seed, 1, c)`."""

    def __init__(self, rows: int, dim: int, clusters: int, spread: float, latent_dim: int, seed: int):
        self.rows, self.dim, self.clusters, self.seed = rows, dim, clusters, seed
        rng = np.random.default_rng([seed, 0])
        self.centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        # Uneven populations (a few big clusters, many small) and spreads.
        weights = rng.lognormal(0.0, 1.0, clusters)
        self.weights = weights / weights.sum()
        self.spreads = (spread * rng.lognormal(0.0, 0.25, clusters)).astype(np.float32)
        # Within a cluster rows vary mostly along a few shared directions (embeddings have a
        # low intrinsic dimension), scaled so each coordinate's variance is about 1.
        self.latent_dim = min(latent_dim, dim)
        self.basis = (rng.standard_normal((self.latent_dim, dim)) / np.sqrt(self.latent_dim)).astype(np.float32)
        self.words = vocabulary(seed)
        # Each cluster has a handful of topic words that its captions favour.
        self.topics = rng.integers(0, len(self.words), (clusters, 6))
        self.category = rng.integers(0, len(CATEGORIES), clusters)

    def vectors_near(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        cluster = rng.choice(self.clusters, size=n, p=self.weights)
        latent = rng.standard_normal((n, self.latent_dim), dtype=np.float32) @ self.basis
        iso = rng.standard_normal((n, self.dim), dtype=np.float32) * ISOTROPIC
        return self.centres[cluster] + (latent + iso) * self.spreads[cluster, None], cluster

    def chunk(self, c: int) -> tuple[pa.RecordBatch, np.ndarray]:
        start = c * CHUNK_ROWS
        n = min(CHUNK_ROWS, self.rows - start)
        rng = np.random.default_rng([self.seed, 1, c])
        vecs, cluster = self.vectors_near(rng, n)
        topic_pick = self.topics[cluster[:, None], rng.integers(0, 6, (n, 3))]
        other_pick = rng.integers(0, len(self.words), (n, 3))
        w = self.words
        ids = np.arange(start, start + n, dtype=np.int64)
        captions = [
            f"{w[a]} {w[b]} {w[x]} with {w[cc]} {w[y]} {w[z]}, shot {i}"
            for (a, b, cc), (x, y, z), i in zip(topic_pick.tolist(), other_pick.tolist(), ids.tolist())
        ]
        cat = self.category[cluster]
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array(ids),
                pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), self.dim),
                pa.array(captions),
                pa.array(cat.astype(np.int32)),
                pa.array([CATEGORIES[k] for k in cat.tolist()]),
                pa.array(rng.integers(YEARS[0], YEARS[1], n).astype(np.int16)),
                pa.array(cluster.astype(np.int32)),
            ],
            schema=self.schema(),
        )
        return batch, vecs

    def schema(self) -> pa.Schema:
        return pa.schema([
            pa.field("id", pa.int64(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), self.dim)),
            pa.field("caption", pa.string()),
            pa.field("category", pa.int32()),
            pa.field("category_name", pa.string()),
            pa.field("year", pa.int16()),
            pa.field("cluster", pa.int32()),
        ])

    def queries(self, nq: int) -> np.ndarray:
        q, _ = self.vectors_near(np.random.default_rng([self.seed, 2]), nq)
        return np.ascontiguousarray(q, dtype=np.float32)


class TopK:
    """Running exact top-k by L2 of `queries` over rows seen so far."""

    def __init__(self, queries: np.ndarray, k: int):
        self.q = queries
        self.q64 = queries.astype(np.float64)
        self.q_sq = (self.q.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
        self.k = k
        nq = len(queries)
        self.ids = np.full((nq, k), -1, dtype=np.int64)
        self.dist = np.full((nq, k), np.inf, dtype=np.float64)

    def add(self, vecs: np.ndarray, first_id: int):
        n = len(vecs)
        keep = min(n, self.k * CANDIDATE_FACTOR)
        # ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2, in float32: only to pick candidates.
        approx = self.q @ vecs.T
        approx *= -2.0
        approx += (vecs.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)[None, :]
        approx += self.q_sq[:, None]
        if keep < n:
            cand = np.argpartition(approx, keep - 1, axis=1)[:, :keep]
        else:
            cand = np.tile(np.arange(n), (len(self.q), 1))
        # Exact (float64) distances of the candidates decide.
        diff = vecs[cand].astype(np.float64) - self.q64[:, None, :]
        exact = np.einsum("qcd,qcd->qc", diff, diff)
        all_ids = np.concatenate([self.ids, cand + first_id], axis=1)
        all_dist = np.concatenate([self.dist, exact], axis=1)
        # Sort by (distance, id): lexsort's last key is the primary one.
        order = np.lexsort((all_ids, all_dist), axis=1)[:, : self.k]
        self.ids = np.take_along_axis(all_ids, order, axis=1)
        self.dist = np.take_along_axis(all_dist, order, axis=1)


def index_facts(ds) -> dict:
    """What lance really built (it may train fewer partitions than asked)."""
    os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")
    stats = ds.stats.index_stats("vector_idx")["indices"][0]
    sizes = sorted(p["size"] for p in stats["partitions"])
    sub = stats["sub_index"]
    return {
        "num_partitions": stats["num_partitions"], "num_sub_vectors": sub["num_sub_vectors"],
        "num_bits": sub["nbits"], "partition_rows_min": sizes[0],
        "partition_rows_median": sizes[len(sizes) // 2], "partition_rows_max": sizes[-1],
    }


def sidecar_path(origin_root: Path, bucket: str, key: str) -> Path:
    """s3s-fs 0.14 keeps an object's ETag in `.bucket-<b64>.object-<b64>.internal.json` at its
    root; without one it hashes the whole file on every GET and HEAD, which would make the
    bench origin's CPU, not S3-like latency, the cost of every direct read (the same reason
    `lakecache-bench gen-objects` writes them)."""
    enc = lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")  # noqa: E731
    return origin_root / f".bucket-{enc(bucket)}.object-{enc(key)}.internal.json"


def table_keys(bucket_dir: Path, table_path: Path) -> list[tuple[str, Path]]:
    return [(p.relative_to(bucket_dir).as_posix(), p) for p in sorted(table_path.rglob("*")) if p.is_file()]


def write_etag_sidecars(bucket_dir: Path, table_path: Path) -> int:
    """Writes the missing or stale ETag sidecars of the table's files; returns how many."""
    origin_root, bucket = bucket_dir.parent, bucket_dir.name
    written = 0
    for key, path in table_keys(bucket_dir, table_path):
        side = sidecar_path(origin_root, bucket, key)
        stamp = f"{path.stat().st_size}:{path.stat().st_mtime_ns}"
        if side.exists():
            try:
                if json.loads(side.read_text()).get("bench_source") == stamp:
                    continue
            except (OSError, ValueError):
                pass
        md5 = hashlib.md5()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                md5.update(chunk)
        # s3s-fs reads only "e_tag"; "bench_source" tells this script whether it is current.
        side.write_text(json.dumps({"e_tag": md5.hexdigest(), "bench_source": stamp}))
        written += 1
    return written


def remove_etag_sidecars(bucket_dir: Path, table: str):
    """Drops the sidecars of every key under `<table>.lance/` (before a rebuild)."""
    origin_root, bucket = bucket_dir.parent, bucket_dir.name
    prefix = sidecar_path(origin_root, bucket, "x").name.split(".object-")[0] + ".object-"
    for side in origin_root.glob(prefix + "*.internal.json"):
        enc = side.name[len(prefix):-len(".internal.json")]
        try:
            key = base64.urlsafe_b64decode(enc + "=" * (-len(enc) % 4)).decode()
        except ValueError:
            continue
        if key.startswith(f"{table}.lance/"):
            side.unlink()


def default_table(rows: int, dim: int) -> str:
    return f"v{dim}x{rows}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path,
                    help="bucket folder of the bench origin; the table is written to OUT/TABLE.lance")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="128",
                    help="rows x dim: 128 = 1,000,000 x 128, 384 = 200,000 x 384 (default 128)")
    ap.add_argument("--rows", type=int, help="number of rows (overrides the preset)")
    ap.add_argument("--dim", type=int, help="vector dimension (overrides the preset)")
    ap.add_argument("--table", help="table name (default v<dim>x<rows>)")
    ap.add_argument("--truth", type=Path,
                    help="folder for queries.npy, gt.npy, gt_dist.npy, dataset.json (default OUT/../truth/TABLE)")
    ap.add_argument("--clusters", type=int, default=1000, help="Gaussian clusters (default 1000)")
    ap.add_argument("--spread", type=float, default=0.75,
                    help="within-cluster standard deviation relative to the centres' (default 0.75: "
                         "clusters overlap, so recall grows with nprobes)")
    ap.add_argument("--latent-dim", type=int, default=16,
                    help="directions along which rows of a cluster vary (default 16)")
    ap.add_argument("--nq", type=int, default=1000, help="query vectors (default 1000)")
    ap.add_argument("--k", type=int, default=10, help="neighbours kept per query (default 10)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--num-partitions", type=int, help="IVF partitions (default round(sqrt(rows)))")
    ap.add_argument("--pq-sub-dim", type=int, default=8,
                    help="dimensions per PQ sub-vector: num_sub_vectors = dim / this (default 8)")
    ap.add_argument("--rows-per-file", type=int, default=250_000, help="rows per Lance data file (default 250,000)")
    ap.add_argument("--force", action="store_true", help="rebuild even if a complete dataset (with the same or other parameters) exists")
    a = ap.parse_args()

    rows, dim = PRESETS[a.preset]
    rows = a.rows or rows
    dim = a.dim or dim
    table = a.table or default_table(rows, dim)
    truth = a.truth or (a.out.parent.parent / "truth" / table)
    partitions = a.num_partitions or max(1, round(rows ** 0.5))
    if dim % a.pq_sub_dim:
        ap.error(f"--dim {dim} is not a multiple of --pq-sub-dim {a.pq_sub_dim}")
    params = {
        "table": table, "rows": rows, "dim": dim, "clusters": a.clusters, "spread": a.spread, "latent_dim": a.latent_dim,
        "nq": a.nq, "k": a.k, "seed": a.seed, "metric": "L2",
        "index": {"type": "IVF_PQ", "num_partitions": partitions,
                  "num_sub_vectors": dim // a.pq_sub_dim, "num_bits": 8},
        "rows_per_file": a.rows_per_file, "generator": "bench/search/dataset.py v1",
    }
    table_path = a.out / f"{table}.lance"
    marker = truth / "dataset.json"
    if marker.exists():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in params} == params and table_path.exists() and not a.force:
            n = write_etag_sidecars(a.out, table_path)
            print(f"dataset {table} already complete in {table_path} (truth in {truth})"
                  + (f"; wrote {n} missing ETag sidecars" if n else "; nothing to do"))
            return 0
        if not a.force:
            print(f"error: {marker} describes a dataset with other parameters; pass --force to rebuild", file=sys.stderr)
            return 2
        marker.unlink()

    import lance

    # No marker: anything there is from an unfinished run.
    if table_path.exists():
        shutil.rmtree(table_path)
    if a.out.exists():
        remove_etag_sidecars(a.out, table)
    a.out.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    gen = Generator(rows, dim, a.clusters, a.spread, a.latent_dim, a.seed)
    queries = gen.queries(a.nq)
    topk = TopK(queries, min(a.k, rows))
    chunks = (rows + CHUNK_ROWS - 1) // CHUNK_ROWS

    def batches():
        for c in range(chunks):
            batch, vecs = gen.chunk(c)
            topk.add(vecs, c * CHUNK_ROWS)
            if c % 4 == 3 or c == chunks - 1:
                print(f"  rows {min((c + 1) * CHUNK_ROWS, rows):,}/{rows:,} ({time.monotonic() - t0:.0f} s)", flush=True)
            yield batch

    print(f"writing {rows:,} x {dim} rows ({a.clusters} clusters, seed {a.seed}) to {table_path}", flush=True)
    reader = pa.RecordBatchReader.from_batches(gen.schema(), batches())
    ds = lance.write_dataset(reader, str(table_path), mode="create", max_rows_per_file=a.rows_per_file)
    t_write = time.monotonic() - t0
    print(f"building IVF_PQ (partitions {partitions}, sub-vectors {dim // a.pq_sub_dim})", flush=True)
    t1 = time.monotonic()
    ds.create_index("vector", index_type="IVF_PQ", metric="L2", num_partitions=partitions,
                    num_sub_vectors=dim // a.pq_sub_dim, num_bits=8)
    t_index = time.monotonic() - t1
    built = index_facts(ds)
    if built["num_partitions"] != partitions:
        # Lance trains fewer partitions than asked when there are too few rows per partition.
        print(f"  note: lance built {built['num_partitions']} partitions (asked {partitions})", flush=True)

    n_sidecars = write_etag_sidecars(a.out, table_path)
    np.save(truth / "queries.npy", queries)
    np.save(truth / "gt.npy", topk.ids)
    np.save(truth / "gt_dist.npy", topk.dist)
    size = sum(p.stat().st_size for p in table_path.rglob("*") if p.is_file())
    info = dict(params)
    info.update({
        "table_path": str(table_path.resolve()), "table_bytes": size, "lance_version": lance.__version__,
        "index_built": built, "fragments": len(ds.get_fragments()), "write_seconds": round(t_write, 1),
        "index_seconds": round(t_index, 1), "etag_sidecars": n_sidecars, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    marker.write_text(json.dumps(info, indent=2) + "\n")
    print(f"done: {size / 2**20:.0f} MiB table, write {t_write:.0f} s, index {t_index:.0f} s; truth in {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
