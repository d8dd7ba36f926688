// CPU kernels compiled for the baseline instruction set of the build.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#define CODETR_CPU_KERNEL_NAMESPACE cpu_default
#include "kernels.h"
#include "kernel_instantiations.h"
