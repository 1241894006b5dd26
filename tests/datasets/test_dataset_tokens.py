from __future__ import annotations

from longtune.datasets.tokens import bucket_upper_bound, token_stats


def test_power_of_two_buckets():
    assert [bucket_upper_bound(n) for n in (0, 1, 2, 3, 4, 5, 1000, 1024, 1025)] == [
        1,
        1,
        2,
        4,
        4,
        8,
        1024,
        1024,
        2048,
    ]


def test_stats_and_training_token_estimates():
    stats = token_stats(["a " * 100, "a " * 3000, "a " * 5000], lambda t: len(t.split()))
    assert (stats.examples, stats.tokens, stats.max_tokens) == (3, 8100, 5000)
    assert stats.histogram == {128: 1, 4096: 1, 8192: 1}
    # truncated at 4096: 100 + 3000 + 4096, twice
    assert stats.estimated_training_tokens(4096, epochs=2) == 2 * 7196
    # pre-training text is split, not truncated
    assert stats.estimated_training_tokens(4096, epochs=1, truncate=False) == 8100
    assert stats.packed_sequences(4096) == 2
    assert stats.to_dict()["histogram"] == {"<=128": 1, "<=4096": 1, "<=8192": 1}
