// The instruction set a CPU kernel translation unit is compiled for. CMakeLists.txt compiles the
// kernels once per ISA variant (x86-64-v2, AVX2, AVX-512; one portable build elsewhere), each with
// PF_CPU_ISA naming a namespace of its own, so no inline function or template of one variant can
// stand in for another's at link time; csrc/cpu_dispatch.cpp picks one at run time.
#pragma once

#ifndef PF_CPU_ISA
#define PF_CPU_ISA isa_native  // a translation unit built outside the variant set
#endif
