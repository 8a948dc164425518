"""sdstudio: a desktop studio for Stable Diffusion."""

import os as _os

__version__ = "0.1.0"

# Intel MKL, PyTorch's matrix library on x86 CPUs, may round a matrix product differently
# by how its operands happen to lie in memory (seen on AMD EPYC: one model loaded from a
# folder and from a single file gave images a level apart). Its reproducible mode makes
# the same request give the same pixels however the weights were loaded, at no measured
# cost; it has to be set before torch first multiplies, so it is set here, on import.
_os.environ.setdefault("MKL_CBWR", "AUTO")
