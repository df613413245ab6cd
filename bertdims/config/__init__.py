"""What a run is: the one vocabulary of config fields, each declared once with its default,
constraint and meaning (``params``), and the fine-tuning config with the published recipe it is
compared with (``finetune_config``). Imports only the layers below (core, data, modeling)."""
from . import params, finetune_config  # noqa: F401
