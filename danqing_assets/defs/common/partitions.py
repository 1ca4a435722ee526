"""One dynamic partition per *batch* of a crawl snapshot: every per-pair asset runs per batch.

`danqing snapshot add NAME SOURCE [--batch-size N]` lists the snapshot's WARC files once and cuts them into batches of
N files (default 500, `lib/snapshots.DEFAULT_BATCH_SIZE`), adding one partition per batch: the key is NAME itself when
the files fit in one batch (the demo, samples), else `NAME.b00000`, `NAME.b00001`, ... (190 per Common Crawl
snapshot at the default, 3,800 for 20 snapshots). The registry maps a key to its snapshot (`SnapshotRegistry.batch`).
The definition keeps its name `snapshots` so the partitions of instances made before batches stay valid.
"""

import dagster as dg

snapshot_partitions = dg.DynamicPartitionsDefinition(name="snapshots")
