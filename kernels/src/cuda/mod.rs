//! CUDA C kernel sources (kernels/cuda/*.cu), embedded at build time and compiled by NVRTC at
//! run time. (being written)
