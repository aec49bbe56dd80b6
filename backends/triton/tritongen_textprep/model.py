"""Python-based Triton backend `tritongen_textprep`: tokenization for preprocessing models.

Every model whose config says `backend: "tritongen_textprep"` runs this file. The code itself
lives in the versioned package `tritongen_textprep` (backends/textprep/), installed in the
model version's execution environment (or, without one, on the server's PYTHONPATH).
"""

from tritongen_textprep.triton_model import TritonPythonModel

__all__ = ["TritonPythonModel"]
