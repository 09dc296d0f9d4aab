// The Program checker: an independent proof that a Program is race-free and
// cannot deadlock, from the Program alone (task_accesses, waits, signals,
// worker lists). It replays `steps` decode steps symbolically:
//  * structure: every wait's expected count equals its counter's signalers,
//    same-step waits name only earlier tasks, worker lists follow the global
//    order, the step counter is signalled by exactly the Step tasks — together
//    with the step gate this makes the lowest unfinished task always runnable;
//  * happens-before: vector clocks over the worker streams, joined along worker
//    order, waits (counter targets) and the step gate; every task of a step must
//    happen before that step's Step tasks (so counters cannot be overtaken);
//  * races: over interval maps of every address space, each range a task reads
//    must have been written by tasks it happens after (RAW), and each write must
//    happen after the previous writers (WAW) and the readers since (WAR), except
//    atomic accumulates of one operator, which commute; reading an activation
//    nothing wrote is an error too.
#pragma once

#include <string>

#include "program/program.h"

namespace keel::program {

struct CheckResult {
  bool ok = true;
  std::string error;      // the first violation, naming the tasks, step and buffer range
  uint64_t accesses = 0;  // ranges checked
};

/// Checks `p` over `steps` (>= 2) decode steps. Never throws for a violation:
/// the result says what is wrong. (A malformed Program still throws keel::Error
/// from validate().)
CheckResult check(const Program& p, int steps = 3);

/// check() that throws keel::Error with the violation.
void check_or_throw(const Program& p, int steps = 3);

}  // namespace keel::program
