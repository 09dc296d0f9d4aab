# bench_tokenizer: encode throughput (MB/s) of the Qwen3 tokenizer on 1 MB of mixed text.
if(TARGET benchmark::benchmark AND TARGET keel_tokenizer)
  add_executable(bench_tokenizer ${CMAKE_CURRENT_LIST_DIR}/bench_tokenizer.cpp)
  target_link_libraries(bench_tokenizer PRIVATE keel_tokenizer benchmark::benchmark)
  target_compile_definitions(bench_tokenizer PRIVATE KEEL_SHARED_DIR="${KEEL_SHARED_DIR}")
endif()
