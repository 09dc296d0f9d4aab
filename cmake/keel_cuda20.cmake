# CMake 3.25 does not know that nvcc 13 supports C++20 for CUDA: tell it the flag
# and the feature, so CMAKE_CUDA_STANDARD 20 works (included by the top-level CMakeLists.txt).
set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
set(CMAKE_CUDA20_COMPILE_FEATURES cuda_std_20)
if(NOT "cuda_std_20" IN_LIST CMAKE_CUDA_COMPILE_FEATURES)
  list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
endif()
