"""Partitions: the prompt set is split into fixed-size shards; each shard is one dynamic partition."""

import dagster as dg

# Keys are prompt shard names ("shard-000000", ...). The prompt_set asset / sensor registers new keys
# as the prompt source grows; synthetic_videos and filtered_multiview_dataset are partitioned by them.
prompt_shards = dg.DynamicPartitionsDefinition(name="prompt_shards")
