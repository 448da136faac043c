"""Scheduling policies: shares cover every task once; chunk sizes follow the rules."""
import math

import pytest

from mtcmpi.errors import UsageError
from mtcmpi.policies import Dynamic, Guided, Kind, Static, parse_schedule


@pytest.mark.parametrize("cyclic", [False, True])
@pytest.mark.parametrize("n, size", [(0, 3), (1, 4), (10, 3), (1000, 7), (5, 5)])
def test_static_shares_partition_the_tasks(n, size, cyclic):
    shares = [list(Static(cyclic=cyclic).share(r, size, n)) for r in range(size)]
    assert sorted(i for s in shares for i in s) == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    if not cyclic:
        assert all(s == list(range(s[0], s[-1] + 1)) for s in shares if s)


def test_guided_chunks_shrink_with_remaining_work():
    g = Guided(k=2)
    assert g.chunk_size(1000, 10) == 50
    assert g.chunk_size(30, 10) == 2
    assert g.chunk_size(1, 10) == 1
    assert Guided(k=2, chunk=4).chunk_size(1, 10) == 4


def test_auto_chunk_starts_at_one_and_grows_for_short_tasks():
    d = Dynamic()
    assert d.chunk_size(10**6, 4) == 1
    d.observe(1000, 1000 * 1e-6)            # 1 us tasks
    d.observe_service(2e-5)
    big = d.chunk_size(10**6, 4)
    assert big > 100
    assert d.chunk_size(400, 4) == 50        # the tail: remaining / (2 x workers)
    slow = Dynamic()
    slow.observe(10, 10 * 0.3)               # 0.3 s tasks need no chunking
    assert slow.chunk_size(10**6, 100) == 1


def test_fixed_chunk_wins():
    assert Dynamic(chunk=7).chunk_size(3, 100) == 7


@pytest.mark.parametrize("text, cls, extra", [
    ("static", Static, {"cyclic": False}), ("static:cyclic", Static, {"cyclic": True}),
    ("dynamic", Dynamic, {"prefetch": 1}), ("guided", Guided, {"k": 2}), ("guided:5", Guided, {"k": 5}),
])
def test_parse_schedule(text, cls, extra):
    policy = parse_schedule(text)
    assert type(policy) is cls
    assert all(getattr(policy, k) == v for k, v in extra.items())


def test_prefetch_values():
    assert parse_schedule("dynamic", prefetch="auto").prefetch_below < math.inf
    fixed = parse_schedule("dynamic", prefetch="3")
    assert fixed.prefetch == 3 and fixed.prefetch_below == math.inf


@pytest.mark.parametrize("text, chunk, prefetch, words", [
    ("fast", None, "auto", "unknown schedule 'fast'"), ("guided:0", None, "auto", "unknown schedule"),
    ("dynamic", 0, "auto", "--chunk must be >= 1"), ("dynamic", None, "-1", "--prefetch must be"),
])
def test_bad_schedules(text, chunk, prefetch, words):
    with pytest.raises(UsageError, match=words):
        parse_schedule(text, chunk, prefetch)


@pytest.mark.parametrize("text, kind, workers", [
    ("static", Kind.STATIC, 4), ("static:cyclic", Kind.STATIC, 4), ("dynamic", Kind.DYNAMIC, 3),
    ("guided:3", Kind.GUIDED, 3),
])
def test_the_kind_of_a_policy_says_whether_rank_0_works(text, kind, workers):
    policy = parse_schedule(text)
    assert policy.kind is kind and kind.working_ranks(4) == workers
    assert kind.working_ranks(1) == 1   # one rank runs everything itself


@pytest.mark.parametrize("stored, kind", [
    ("guided:4, chunk auto, prefetch auto", Kind.GUIDED), ("dynamic, chunk 3, prefetch 1", Kind.DYNAMIC),
    ("static:cyclic", Kind.STATIC), ("static, equal-cost shares", Kind.STATIC), ("", Kind.STATIC),
])
def test_the_kind_is_read_back_from_a_results_file_policy(stored, kind):
    assert Kind.of(stored) is kind
