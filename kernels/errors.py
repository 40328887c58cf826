"""The one error a kernel raises for input it cannot run, before anything is launched."""

from __future__ import annotations


class KernelInputError(ValueError):
    """A kernel was given tensors it does not support (dtype, shape, device, length).

    The message names the argument and what is accepted. Call the op through
    `kernels.ops` (which falls back to the plain-torch reference), or convert the input.
    """
