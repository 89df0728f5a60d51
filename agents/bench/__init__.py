"""The benchmarks behind ``lmrl-gym bench NAME``, one module each: :mod:`~agents.bench.decoding`,
:mod:`~agents.bench.hf_decoding`, :mod:`~agents.bench.algorithms`, :mod:`~agents.bench.suite`,
:mod:`~agents.bench.ppo_vs_sb3`, :mod:`~agents.bench.vs_trl` (the env suite's is
:mod:`lmrl_gym.benchmark`). Each measures, formats and prints the machine it ran on
(:mod:`~agents.bench.machine`); the flags are parsed in :mod:`agents.commands.bench`."""
