"""Training: the one loop every kind of training steps through (``loop``), its building blocks
(``training``: loaders, evaluation, freezing, optimizer, schedule), the head on chosen
dimensions (``heads``), fine-tuning (``finetuning``), several tasks in one model
(``multitask``), learned sparse masks (``sparse``, Radiya-Dixit and Wang) and where a grid's runs
execute (``executor``). Imports only the layers below."""
from . import training, heads, loop, finetuning, multitask, sparse, executor  # noqa: F401
