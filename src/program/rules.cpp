// check_prompt_fits (see rules.h).
#include "program/rules.h"

#include "core/error.h"

namespace keel::program {

void check_prompt_fits(int64_t prompt_len, int64_t max_context, const char* who) {
  KEEL_CHECK(prompt_len >= 1, who, ": the prompt is empty");
  KEEL_CHECK(prompt_fits(prompt_len, max_context), who, ": the prompt has ", prompt_len,
             " tokens but the context holds ", max_context, " (prompt longer than the context); raise --context");
}

}  // namespace keel::program
