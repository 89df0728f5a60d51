"""Inverse RL: learning a reward from demonstrations (:mod:`agents.irl.learner`, :class:`IRL`), and judging
a learned reward against an oracle task's true log-probability (:mod:`agents.irl.evaluation`)."""

from agents.irl.learner import IRL, IRL_LOSSES, POLICY_ALGORITHMS, Demonstrations

__all__ = ["IRL", "IRL_LOSSES", "POLICY_ALGORITHMS", "Demonstrations"]
