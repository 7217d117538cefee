import dagster as dg

from vfusion3d_pipeline.definitions import defs
from vfusion3d_pipeline.run_all import phases


def test_phases_cover_every_asset_once_in_dependency_order() -> None:
    before, partitioned, after = phases()
    graph = defs.resolve_asset_graph()
    materializable = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    assert sorted(before + partitioned + after) == sorted(materializable)
    assert "renders_3d" in before and "synthetic_videos" in partitioned
    for name in partitioned:
        assert graph.get(dg.AssetKey(name)).partitions_def is not None
    position = {name: i for i, name in enumerate(before + partitioned + after)}
    for key in graph.get_all_asset_keys():
        if key.to_user_string() not in position:
            continue
        for parent in graph.get(key).parent_keys:
            if parent.to_user_string() in position:
                assert position[parent.to_user_string()] < position[key.to_user_string()], (parent, key)
