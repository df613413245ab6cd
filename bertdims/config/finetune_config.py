"""What defines a fine-tuning run: :class:`FinetuneConfig`, its checks, and the published
recipe it is compared with. The training itself is :func:`bertdims.train.finetuning.finetune`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core._validate import ConfigError, ConfigMixin, bad, check_dims, check_range, parse_int_list
from .params import VOCABULARY, check_fields, param

#: The kinds of classifier head: one fully connected layer, or two with ``head_hidden`` units.
HEADS = VOCABULARY["head"].constraint.values


#: The fine-tuning hyper-parameters of Matton and de Oliveira (2020), section 2, for bert-base
#: on full-size data sets; the ``paper`` presets pass them.
PAPER_RECIPE = {"lr": 2e-5, "batch_size": 32, "epochs": 4.0, "layer_lr_decay": 0.95,
                "warmup": 0.1, "dropout": 0.1}


@dataclass
class FinetuneConfig(ConfigMixin):
    """Everything that defines a fine-tuning run (the store key is built from it).

    Every field is checked when the config is made; the checks that need the model's size
    run in :meth:`validate`. :func:`bertdims.train.finetuning.finetune` trains the run.

    Attributes
    ----------
    model : str
        The base encoder: ``"embedded"`` (all-MiniLM-L6-v2), a hub name or a local folder.
    task : str
        A registered task name (:func:`bertdims.task_names`).
    layer : int
        The layer whose output the head reads: 0 the embeddings, 1..L the blocks, -1 the last.
    token : str
        ``cls``, ``mean``, ``maxnorm`` or ``token:i`` (see :mod:`bertdims.modeling.tokens`).
    dims : list of int or None
        The hidden dimensions the head reads (distinct, in [0, H)); None for all. A string
        such as ``"3,17"`` is parsed into a list.
    head : str
        ``linear`` (one fully connected layer) or ``mlp`` (two, with ``head_hidden`` units).
    head_hidden : int
        Hidden units of the ``mlp`` head (not used by a ``linear`` head).
    freeze : int
        0 trains everything; n in 1..L freezes the embeddings and blocks 1..n.
    freeze_embeddings : bool
        Also freeze the embeddings when ``freeze`` is 0.
    train_layers : list of int or None
        If set, only these blocks (1..L) and the head train; it cannot be combined with
        ``freeze`` or ``freeze_embeddings``.

        The frozen bottom (the embeddings and the blocks below the lowest trained one) runs in
        eval mode, without dropout: it gives the pretrained model's features, is computed once
        per training example and cached (blocks above it train from the cache), and
        ``freeze=n`` and ``train_layers=[n+1..L]`` are stored as one run.
    epochs : float
        Passes over the training set (fractions allowed).
    lr : float
        Peak learning rate of the top block; block n gets ``lr * layer_lr_decay ** (L - n)``
        and the embeddings ``lr * layer_lr_decay ** L``.

        Defaults (calibrated on the embedded model, 1,000 training examples, length 64):
        ``lr=1e-4``, ``batch_size=16``, ``epochs=3`` (189 updates). On rotten_tomatoes the
        validation accuracy rises 0.67, 0.69, 0.74, 0.75, 0.79, 0.80 at half-epochs 1-6 and
        the test accuracy ends at 0.76, above the frozen probe on the same [CLS] vector (0.66);
        one epoch stopped at 0.72 with training loss 0.56-0.58 (still learning). The
        Emergent-Properties recipe for bert-base on full data sets is ``lr=2e-5``,
        ``batch_size=32`` and 3-4 epochs (:data:`PAPER_RECIPE`); with it, 1,000 examples and
        one epoch give 29 updates and the embedded model barely leaves chance on
        rotten_tomatoes (0.56 test accuracy).
    head_lr : float or None
        Peak learning rate of the head; None uses 1e-3 (:data:`DEFAULT_HEAD_LR`): a new
        layer reading a few dimensions learns too slowly at the encoder's 2e-5.
    layer_lr_decay : float
        The factor, in (0, 1], by which each layer's peak learning rate shrinks from one
        layer to the one below it (see ``lr``).
    warmup : float
        Fraction of steps with rising learning rate (slanted triangular, down to 0 after).
    batch_size : int
        The effective batch (examples per update).
    micro_batch_size : int
        Examples per forward pass; gradient accumulation makes up the rest of the batch.
    dropout : float
        Dropout on the selected features, before the head.
    weight_decay : float
        AdamW weight decay (biases and LayerNorm parameters get none).
    max_grad_norm : float or None
        Gradient clipping norm (None: off).
    max_train_samples, max_eval_samples : int or None
        Use a fixed random subset of this many examples of the training split / of each
        evaluation split (the same subset for every seed); None uses them all.
    max_seq_len : int
        Tokens per input; longer inputs are truncated.
    early_stopping_fraction : float
        The checkpoint rule. 0 (default): train the whole budget and keep the final state;
        nothing is held out, and the validation split is evaluated along the way only to draw
        the curve (``history``; it chooses nothing). Above 0: hold out
        ``max(MIN_DEV_SAMPLES, fraction * n)`` training examples (at least 300) as a
        development split, evaluate it every ``eval_every`` steps, keep the state of lowest
        development *loss* (a later evaluation wins a tie) and stop after ``patience``
        evaluations without a lower loss. The default suits about 1,000 training examples,
        where a 300-example hold-out would cost a third of the data and a smaller one picks
        checkpoints by noise. ``info["checkpoint_rule"]`` and ``info["best_step"]`` record
        what was kept.
    patience : int
        Evaluations without a lower development loss before stopping.
    eval_every : int or None
        Steps between evaluations (None: twice per epoch, and at least twice per run).
    frozen_epochs : float
        Passes over the training set when no encoder parameter trains (``freeze`` equal to
        the number of layers, or ``freeze_embeddings`` with every block frozen): only the head
        trains, on features computed once, so it is trained to convergence at little cost
        (``epochs`` is not used then).
    seed : int
        Seeds the head's initialisation, the dropout masks and the order of the training
        examples in each epoch; which examples are used does not depend on it.
    device : str
        ``"auto"`` (a GPU when there is one), ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
    precision : str
        ``"auto"`` (bf16 on a GPU that supports it, else fp32), ``"fp32"`` or ``"bf16"``.
    init_from : str or None
        A folder saved by :func:`finetune` (``run.model_dir``): start the encoder from it
        with a new head (cross-fine-tuning); its weights and tokenizer replace ``model``'s.
    data_dir : str or None
        Points a hub task at a copy of its data saved with ``DatasetDict.save_to_disk``
        (:func:`bertdims.data.tasks.load_task`); None loads it as usual.
    checkpoint_every : int or None
        Steps between resumable checkpoints (None: at each evaluation).

    Raises
    ------
    ConfigError
        When a field has a wrong type or value (an unknown task, a negative ``lr``, both
        ``train_layers`` and ``freeze`` set, ...).
    """

    model: str = param("model")
    task: str = param("task")
    layer: int = param("layer")
    token: str = param("token")
    dims: list[int] | None = param("dims")
    head: str = param("head")
    head_hidden: int = param("head_hidden")
    freeze: int = param("freeze")
    freeze_embeddings: bool = param("freeze_embeddings")
    train_layers: list[int] | None = param("train_layers")
    epochs: float = param("epochs")
    lr: float = param("lr")
    head_lr: float | None = param("head_lr")
    layer_lr_decay: float = param("layer_lr_decay")
    warmup: float = param("warmup")
    batch_size: int = param("batch_size")
    micro_batch_size: int = param("micro_batch_size")
    dropout: float = param("dropout")
    weight_decay: float = param("weight_decay")
    max_grad_norm: float | None = param("max_grad_norm")
    max_train_samples: int | None = param("max_train_samples")
    max_eval_samples: int | None = param("max_eval_samples")
    max_seq_len: int = param("max_seq_len")
    early_stopping_fraction: float = param("early_stopping_fraction")
    patience: int = param("patience")
    eval_every: int | None = param("eval_every")
    frozen_epochs: float = param("frozen_epochs")
    seed: int = param("seed")
    device: str = param("device")
    precision: str = param("precision")
    init_from: str | None = param("init_from")
    data_dir: str | None = param("data_dir")
    checkpoint_every: int | None = param("checkpoint_every")

    def __post_init__(self):
        check_fields(self)                  # every field against the vocabulary's constraint
        if self.train_layers is not None and (self.freeze or self.freeze_embeddings):
            raise bad("train_layers", self.train_layers,
                      "use either train_layers or freeze/freeze_embeddings, not both")

    def validate(self, num_layers: int, hidden_size: int) -> None:
        """Checks that need the model's size (L blocks, hidden size H)."""
        check_range("layer", self.layer, -1, num_layers, integer=True)
        if self.layer < -1:
            raise bad("layer", self.layer, f"expected -1 or an integer in [0, {num_layers}]")
        check_dims("dims", self.dims, hidden_size)
        if self.freeze > num_layers:
            raise bad("freeze", self.freeze, f"expected an integer in [0, {num_layers}] "
                      f"(the model has {num_layers} layers)")
        read = num_layers if self.layer == -1 else self.layer
        if self.train_layers is not None:
            for n in self.train_layers:
                if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= read:
                    raise bad("train_layers", self.train_layers,
                              f"every layer must be an integer in [1, {read}] (the model has "
                              f"{num_layers} layers and the head reads layer {read}); {n!r} is not")
            if len(set(self.train_layers)) != len(self.train_layers):
                raise bad("train_layers", self.train_layers, "layers must be distinct")

    def resolved_layer(self, num_layers: int) -> int:
        return num_layers if self.layer == -1 else self.layer


def _parse_layers(text: str) -> list[int] | None:
    try:
        return parse_int_list(text)
    except ConfigError:
        raise bad("train_layers", text, "expected comma-separated integers such as '5,6'") from None
