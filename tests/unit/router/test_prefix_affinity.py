import math
import random
from collections import Counter

from prometheus_client import CollectorRegistry

from flotilla.api.routing import PrefixAffinityParams
from flotilla.router.admission import Admission
from flotilla.router.features import MAX_PREFIX_BLOCKS, prefix_hashes
from flotilla.router.instances import InstanceSpec, InstanceTable
from flotilla.router.metrics import RouterMetrics
from flotilla.router.policies import InstanceView, Observer, RequestFeatures, Snapshot, default_registry
from flotilla.router.policies.prefix_affinity import PrefixAffinity, PrefixIndex
from flotilla.router.policy_book import PolicyBook

SYSTEM = list(range(512))  # a 512-token system prompt every request starts with, as on Mooncake


def tokens(conversation: int, n: int) -> list[int]:
    return [100_000 + conversation * 10_000 + k for k in range(n)]


def features(prompt: list[int]) -> RequestFeatures:
    hashes = prefix_hashes(prompt, block_chars=64, block_tokens=16, max_blocks=MAX_PREFIX_BLOCKS)
    return RequestFeatures(model="m", prompt_tokens=len(prompt), prefix_hashes=hashes)


def views(loads: dict[str, float]) -> Snapshot:
    return Snapshot(tuple(InstanceView(i, est_requests=load) for i, load in loads.items()))


def policy(**params: float) -> PrefixAffinity:
    built = default_registry().build("prefix_affinity", params)
    assert isinstance(built, PrefixAffinity) and isinstance(built, Observer)
    return built


def test_a_long_shared_prefix_returns_to_the_instance_that_served_it() -> None:
    pa = policy()
    loads = {f"i{k}": 0.0 for k in range(8)}
    homes = {}
    for conv in range(8):  # first turns: the system prompt is a small part, nothing attracts them
        f = features(SYSTEM + tokens(conv, 1500))
        home = pa.rank(f, views(loads), random.Random(conv))[0].id
        pa.observe(f, home)
        loads[home] += 1
        homes[conv] = home
    assert len(set(homes.values())) == 8, "first turns are spread by load"
    for conv in range(8):  # next turns extend the first: each goes home, even though loads are equal
        f = features(SYSTEM + tokens(conv, 1500) + tokens(conv + 50, 300))
        assert pa.rank(f, views(loads), random.Random(conv))[0].id == homes[conv]
    # A short prompt matched through the system prompt (32 of 40 blocks) also sticks, by its match.
    short = features(SYSTEM + tokens(99, 128))
    pa.observe(short, "i3")
    again = features(SYSTEM + tokens(99, 128) + tokens(98, 16))
    assert pa.rank(again, views(loads), random.Random(0))[0].id == "i3"


def test_a_shared_system_prompt_alone_pins_nothing() -> None:
    pa = policy()
    ids = [f"i{k:02d}" for k in range(16)]
    # Loads stay equal (say every request finishes before the next): a ring keyed on the leading
    # blocks sent all of these to one instance; a 512-token match out of 2,048 hashed tokens is short.
    picks: Counter[str] = Counter()
    for conv in range(64):
        f = features(SYSTEM + tokens(conv, 4000))
        first = pa.rank(f, views(dict.fromkeys(ids, 0.0)), random.Random(conv))[0].id
        pa.observe(f, first)
        picks[first] += 1
    assert len(picks) >= 12 and max(picks.values()) <= 10
    # With loads that grow, least-loaded fallback spreads them exactly.
    loads = dict.fromkeys(ids, 0.0)
    for conv in range(64, 128):
        f = features(SYSTEM + tokens(conv, 4000))
        first = pa.rank(f, views(loads), random.Random(conv))[0].id
        pa.observe(f, first)
        loads[first] += 1
    assert set(loads.values()) == {4.0}


def test_bounded_load_spreads_a_hot_prefix() -> None:
    pa = policy(load_factor=1.25)
    hot = features(SYSTEM + tokens(1, 2000))
    loads = {f"i{k}": 0.0 for k in range(4)}
    placed: list[str] = []
    for k in range(40):  # the same long prompt 40 times, none finishing
        first = pa.rank(hot, views(loads), random.Random(k))[0].id
        pa.observe(hot, first)
        loads[first] += 1
        placed.append(first)
        cap = math.ceil(1.25 * sum(loads.values()) / len(loads))
        assert max(loads.values()) <= cap
    # The home takes the prefix until the bound stops it; once spilled, the prefix is cached on
    # every instance, all match in full, and the least loaded of them wins: the hot prefix spreads.
    assert placed[:2] == ["i2", "i3"] and loads == dict.fromkeys(loads, 10.0)


def test_an_overloaded_home_is_ranked_last() -> None:
    pa = policy(load_factor=1.25)
    f = features(SYSTEM + tokens(7, 1000))
    pa.observe(f, "i0")
    loads = {"i0": 8.0, "i1": 2.0, "i2": 2.0, "i3": 1.0}
    # mean with the new request is (8+5+1)/4 = 3.5 -> cap 5: the home (8) is over it.
    ranked = pa.rank(f, views(loads), random.Random(0))
    assert ranked[0].id == "i3" and ranked[-1].id == "i0"
    loads["i0"] = 2.0  # cap ceil(1.25 x 8 / 4) = 3 holds it: home again, over a less loaded one
    assert pa.rank(f, views(loads), random.Random(0))[0].id == "i0"


def test_short_matches_fall_back_to_least_load() -> None:
    pa = policy(min_match_blocks=4, min_match_fraction=0.0)
    f = features(tokens(3, 48))  # 3 blocks: below min_match_blocks
    pa.observe(f, "i0")
    assert pa.rank(f, views({"i0": 1.0, "i1": 0.0}), random.Random(0))[0].id == "i1"
    g = features(tokens(3, 64))  # 4 blocks, matched in full
    pa.observe(g, "i0")
    assert pa.rank(g, views({"i0": 1.0, "i1": 0.0}), random.Random(0))[0].id == "i0"
    none = RequestFeatures(model="m", prompt_tokens=5)  # no prefix: least load, then the rest
    assert [v.id for v in pa.rank(none, views({"i0": 1.0, "i1": 0.0}), random.Random(0))] == ["i1", "i0"]
    assert pa.rank(none, Snapshot(()), random.Random(0)) == []


def test_index_is_a_bounded_prefix_closed_lru() -> None:
    index = PrefixIndex(blocks_per_instance=10, max_instances=2)
    a, b = tuple(range(1, 9)), tuple(range(101, 109))  # two 8-block prefixes
    index.add("x", a)
    assert index.match("x", a) == 8 and index.match("x", (*a[:5], 0, 0)) == 5
    index.add("x", b)  # 16 blocks into 10: a's deepest blocks go first, its shallow ones stay
    assert index.match("x", b) == 8 and index.match("x", a) == 2 and len(index) == 10
    index.add("y", a)
    index.add("z", a)  # a third instance: the least recently observed one ("x") is forgotten
    assert index.match("x", b) == 0 and index.match("z", a) == 8
    assert index.match("nobody", a) == 0 and index.match("y", ()) == 0


def test_params_are_validated() -> None:
    assert PrefixAffinityParams().min_match_fraction == 0.5
    for bad in ({"load_factor": 1.0}, {"min_match_fraction": 1.5}, {"prefix_blocks": 4}):
        try:
            default_registry().build("prefix_affinity", bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


async def test_admission_tells_the_policy_where_requests_really_went() -> None:
    table = InstanceTable(default_max_inflight=8)
    table.update([InstanceSpec(id=f"i{k}", url=f"http://x{k}", model="m") for k in range(4)])
    book = PolicyBook(default_registry(), "prefix_affinity", {})
    adm = Admission(table, book, RouterMetrics(CollectorRegistry()), rng=random.Random(0))
    f = features(SYSTEM + tokens(5, 1000))
    # A steer (as slice continuations use) overrides the ranking: the index must follow the real choice.
    lease = await adm.acquire(f, steer=lambda ranked: sorted(ranked, key=lambda v: v.id != "i2"))
    assert lease.record.id == "i2"
    lease.release()
    follow_up = features(SYSTEM + tokens(5, 1000) + tokens(6, 100))
    for _ in range(3):
        lease = await adm.acquire(follow_up)
        assert lease.record.id == "i2"
        lease.release()
