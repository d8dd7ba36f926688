// CPU kernels compiled with AVX2 + FMA (x86-64 only); selected at run time when the CPU has them.
#if defined(__x86_64__) || defined(_M_X64)
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <vector>

#pragma GCC target("avx2,fma")
#define CODETR_CPU_KERNEL_NAMESPACE cpu_avx2
#include "kernels.h"
#include "kernel_instantiations.h"
#endif
