# Imported targets for the libraries Volt finds by name (OpenBLAS; with CUDA, cuDNN and NCCL), used by
# Volt's build and again by find_package(Volt), so that the installed package names targets rather
# than this machine's paths, and a project that picked another BLAS (BLA_VENDOR, its own BLAS::BLAS)
# keeps its choice while Volt still gets OpenBLAS (it calls openblas_set_num_threads).
#   volt_import_library(<target> <cache variable> NAMES names... [HINTS dirs...] [PATH_SUFFIXES s...])
function(volt_import_library target var)
  cmake_parse_arguments(A "" "" "NAMES;HINTS;PATH_SUFFIXES" ${ARGN})
  if(TARGET ${target})
    return()
  endif()
  find_library(${var} NAMES ${A_NAMES} HINTS ${A_HINTS} PATH_SUFFIXES ${A_PATH_SUFFIXES})
  if(${var})
    add_library(${target} UNKNOWN IMPORTED GLOBAL)
    set_target_properties(${target} PROPERTIES IMPORTED_LOCATION "${${var}}")
  endif()
endfunction()

macro(volt_import_openblas)
  volt_import_library(Volt::openblas VOLT_OPENBLAS_LIBRARY NAMES openblas PATH_SUFFIXES openblas-pthread openblas-openmp)
endmacro()

# (after find_package(CUDAToolkit))
macro(volt_import_cuda_libraries)
  volt_import_library(Volt::cudnn VOLT_CUDNN_LIB NAMES cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
  volt_import_library(Volt::nccl VOLT_NCCL_LIB NAMES nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
endmacro()
