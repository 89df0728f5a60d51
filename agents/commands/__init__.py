"""The applications: the ``lmrl-gym`` command line (:mod:`agents.commands.cli`), the end-to-end demo
(:mod:`agents.commands.demo`), the benchmarks' flags (:mod:`agents.commands.bench`) and the argument types
they share (:mod:`agents.commands.arguments`). Library code never imports this package.

Nothing is imported here: ``agents.commands.cli`` must run the package-clash check before any other
``agents`` module is imported.
"""
