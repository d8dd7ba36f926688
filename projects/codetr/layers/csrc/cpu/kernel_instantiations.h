// Explicit instantiations of the CPU kernels for every supported (value, accumulation) type pair.
namespace codetr {
namespace CODETR_CPU_KERNEL_NAMESPACE {
#define CODETR_INSTANTIATE(scalar_t, acc_t)                                                             \
  template void forward_range<scalar_t, acc_t>(const ForwardArgs<scalar_t, acc_t>&, int64_t, int64_t); \
  template void backward_range<scalar_t, acc_t>(const BackwardArgs<scalar_t, acc_t>&, int64_t, int64_t);
CODETR_INSTANTIATE(float, float)
CODETR_INSTANTIATE(double, double)
CODETR_INSTANTIATE(c10::Half, float)
CODETR_INSTANTIATE(c10::BFloat16, float)
#undef CODETR_INSTANTIATE
}  // namespace CODETR_CPU_KERNEL_NAMESPACE
}  // namespace codetr
