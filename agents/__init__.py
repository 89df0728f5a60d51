"""The lmrl-gym agent library (transformer policies, algorithms, decoding, evaluation).

So far it holds the Stable-Baselines3 interop (:mod:`agents.sb3`); the policy, pretraining and RL
algorithms land with their issues.
"""
