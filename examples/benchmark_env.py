"""Measure the native vector env against SyncVectorEnv, and batched BLEU against sacreBLEU.

python examples/benchmark_env.py [--num-envs 256 --steps 200 --repeats 5]
"""

from lmrl_gym.benchmark import main

if __name__ == "__main__":
    main()
