"""Partitions: prompts and source objects are split into fixed-size shards; each shard is one dynamic partition."""

import dagster as dg

# Keys are prompt shard names ("shard-000000", ...). The prompt_set asset / sensor registers new keys
# as the prompt source grows; synthetic_videos and filtered_multiview_dataset are partitioned by them.
prompt_shards = dg.DynamicPartitionsDefinition(name="prompt_shards")

# Keys are object shard names ("objects-000000", ...), registered by the source_objects asset; renders_3d is
# partitioned by them (one partition per objects_per_partition source objects).
object_shards = dg.DynamicPartitionsDefinition(name="object_shards")


def register_partitions(instance: dg.DagsterInstance, partitions: dg.DynamicPartitionsDefinition,
                        keys: list[str]) -> list[str]:
    """Add the keys not yet registered as partitions of ``partitions``; returns those added, in order."""
    known = set(instance.get_dynamic_partitions(partitions.name))
    missing = [k for k in keys if k not in known]
    if missing:
        instance.add_dynamic_partitions(partitions.name, missing)
    return missing
