from chalicelib.core.model import Priority, ready_score


def test_strict_priority_order_within_the_aging_bound() -> None:
    aging = 300
    t0 = 1_000_000.0
    # A low task enqueued first still comes after a critical one enqueued later.
    scores = {
        "low": ready_score(t0, Priority.LOW, aging),
        "normal": ready_score(t0 + 10, Priority.NORMAL, aging),
        "high": ready_score(t0 + 20, Priority.HIGH, aging),
        "critical": ready_score(t0 + 30, Priority.CRITICAL, aging),
    }
    assert sorted(scores, key=scores.__getitem__) == ["critical", "high", "normal", "low"]


def test_fifo_within_one_priority() -> None:
    assert ready_score(1.0, Priority.NORMAL, 300) < ready_score(2.0, Priority.NORMAL, 300)


def test_low_task_older_than_bound_overtakes_new_normal_work() -> None:
    aging = 60
    old_low = ready_score(0.0, Priority.LOW, aging)
    new_normal = ready_score(61_000.0, Priority.NORMAL, aging)
    assert old_low < new_normal
