"""The papers' methods, one module each: token representations kept on disk (``extract``), the
shared linear probe (``probes``), the few dimensions that carry a task (``dims``, Few Dimensions
are Enough), one task after another (``crossft``), PCA of the [CLS] embedding (``pca``) and
salient neurons (``neurons``, Matton and de Oliveira), how far fine-tuning moves the weights
(``distances``, Radiya-Dixit and Wang), and whether the papers point at the same dimensions
(``agreement``). Computes only: nothing here imports a chart, a sentence or a flag."""
from . import extract, probes, dims, pca, neurons, distances, crossft, agreement  # noqa: F401
