"""How many ids a drainer claims next: small while the queue is short, large while it
is long, and smaller again when a batch takes long to run.

A claim that comes back full says the queue holds at least that much more, so the
next claim asks for more (up to ``largest``): a backlog is drained with a few large
statements, whose fixed costs (a Redis script, a claim and a finish statement, their
commits) are shared by hundreds of tasks.  It asks for twice as many, or up to eight
times as many when the batch ran in a small part of ``target_seconds``: a first batch
of quick tasks says enough about their speed to skip the doublings, each of which was
a claim and a finish for a handful of tasks (with 4 drainers, 7 of a drainer's ~15
claims of a 20,000-task backlog; bench/RESULTS.md Round 7, "4 drainers").  A claim
that comes back short says the queue is (nearly) empty; the next one asks for
``smallest`` again, so the next burst is spread over every idle drainer instead of
landing on one.  A batch that ran longer than ``target_seconds`` (slow tasks on a few
lanes) halves the size, so one drainer does not hold many slow tasks while its peers
sit idle.
"""

from __future__ import annotations

from dataclasses import dataclass

# A batch that runs longer than this no longer grows, and halves.
TARGET_BATCH_SECONDS = 1.0
# The most a size grows after one quick full batch.
MOST_GROWTH = 8


@dataclass
class BatchSizer:
    largest: int
    smallest: int = 10
    target_seconds: float = TARGET_BATCH_SECONDS

    def __post_init__(self) -> None:
        self.largest = max(self.largest, 1)
        self.smallest = min(max(self.smallest, 1), self.largest)
        self.size = self.smallest

    def observe(self, asked: int, got: int, seconds: float) -> None:
        """After a claim of ``asked`` ids returned ``got`` and they ran for ``seconds``
        (the first task's start to the batch's last outcome: the claim statements and
        the recording are fixed costs of a batch, which a larger one shares)."""
        if got and seconds > self.target_seconds:
            self.size = max(self.smallest, got // 2)
        elif got >= asked:
            # Four times as long as this batch is still well inside the target.
            quick = self.target_seconds / (4 * seconds) if seconds > 0 else MOST_GROWTH
            self.size = min(self.largest, int(asked * min(max(quick, 2), MOST_GROWTH)))
        else:
            self.size = self.smallest
