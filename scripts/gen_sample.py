"""Generates the sample Lance table the start command serves: media-style rows (id,
clip, caption, 128-d embedding) with an IVF_PQ vector index, a full-text index on the
caption and a BTREE index on the clip, written to a local directory
that the cache node uses as its origin. Deterministic for a given seed."""

import argparse
import sys

import numpy as np
import pyarrow as pa


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("path", help="table directory to create, e.g. .lakecache/origin/lakecache-sample/images.lance")
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()

    import lance

    rng = np.random.default_rng(a.seed)
    vecs = rng.standard_normal((a.rows, a.dim)).astype(np.float32)
    words = ["cat", "dog", "street", "beach", "night", "car", "tree", "snow", "crowd", "river"]
    captions = [f"{words[i % 10]} {words[(i * 7) % 10]} scene, clip {i // 250} frame {i % 250}" for i in range(a.rows)]
    table = pa.table(
        {
            "id": pa.array(np.arange(a.rows, dtype=np.int64)),
            "clip": pa.array(np.arange(a.rows, dtype=np.int32) // 250),
            "caption": pa.array(captions),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), a.dim),
        }
    )
    ds = lance.write_dataset(table, a.path, mode="overwrite", max_rows_per_file=5_000)
    ds.create_index("vector", index_type="IVF_PQ", num_partitions=16, num_sub_vectors=16)
    ds.create_scalar_index("caption", index_type="INVERTED")
    ds.create_scalar_index("clip", index_type="BTREE")
    print(f"wrote {a.rows} rows, {len(ds.get_fragments())} fragments, vector, full-text and clip indexes to {a.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
