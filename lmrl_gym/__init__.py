"""lmrl-gym: reinforcement learning for text generation as registered Gymnasium environments.

``import lmrl_gym`` registers ``TextGen-v0`` and one id per built-in task (see ``envs_registry``).
"""

from envs_registry import ENV_SPECS, register_envs, registered_ids
from lmrl_gym.env import TextGenEnv
from lmrl_gym.hf_tokenizer import HFTokenizer  # imports transformers only when one is built
from lmrl_gym.tasks import Example, Task, list_tasks, make_task
from lmrl_gym.tokenizer import Tokenizer
from lmrl_gym.vector_env import TextGenVectorEnv

register_envs()

__version__ = "0.1.0"

__all__ = [
    "ENV_SPECS",
    "Example",
    "HFTokenizer",
    "Task",
    "TextGenEnv",
    "TextGenVectorEnv",
    "Tokenizer",
    "list_tasks",
    "make_task",
    "registered_ids",
]
