from auditstream.engine.dedupe import DeliveredKeys


def test_claimed_keys_are_seen_but_not_delivered_until_acknowledged():
    store: dict[str, int] = {}
    keys = DeliveredKeys(store)
    assert keys.claim("a") is True
    assert not keys.was_delivered("a")
    assert keys.claim("a") is False, "a second listing of a record in flight is a duplicate"
    assert store == {}
    keys.acknowledge([("a", 50)])
    assert keys.was_delivered("a") and store == {"a": 50}
    assert keys.claim("a") is False, "a delivered record listed again is a duplicate"


def test_prune_keeps_keys_that_a_window_starting_there_may_list_again():
    keys = DeliveredKeys({"old": 10, "edge": 20, "new": 30})
    assert keys.prune(20) == 1
    assert keys.claim("old"), "forgotten: a listing may take it again"
    assert not keys.claim("edge"), "a record exactly at an inclusive bound may be listed again"
    assert not keys.claim("new")


def test_acknowledge_keeps_the_latest_relist_time():
    store = {"q": 100}
    DeliveredKeys(store).acknowledge([("q", 50)])
    assert store["q"] == 100
