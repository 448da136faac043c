"""Task kernels shipped with mtcmpi, each usable as kernels.NAME:function."""
