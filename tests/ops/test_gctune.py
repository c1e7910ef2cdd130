import gc

from auditstream.ops.gctune import YOUNG_THRESHOLD, tune_for_pipeline


def test_start_up_heap_is_frozen_and_young_collections_are_rarer():
    before = gc.get_threshold()
    try:
        tune_for_pipeline()
        assert gc.get_freeze_count() > 1000, "the start-up heap is out of the collector's sight"
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1, "reference cycles are still collected"
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
