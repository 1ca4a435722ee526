"""One dynamic partition per crawl snapshot (`danqing snapshot add NAME SOURCE` adds one)."""

import dagster as dg

snapshot_partitions = dg.DynamicPartitionsDefinition(name="snapshots")
