// Human- and tool-readable views of a Program: the text report `keel compile`
// prints (tasks per operator, bytes per worker, waits on the critical path,
// predicted ms/token), a JSON dump of every record and a Graphviz DOT graph.
#pragma once

#include <string>
#include <vector>

#include "program/program.h"

namespace keel::compiler {

using program::Program;

/// Result of simulating one decode step with the cost model: every worker runs
/// its list in order, a task starts when its worker is free and its waits are
/// met, and takes weight_bytes / (bandwidth / W) + overhead (+ KV bytes at
/// `context` for attention partials).
struct Simulation {
  double step_us = 0;               // predicted time per decode step (= per token at B=1)
  double floor_us = 0;              // all weight bytes / bandwidth
  std::vector<uint32_t> critical;   // tasks on the critical path, first to last
  int critical_waits = 0;           // links on it that are dependency waits (not worker order)
  std::vector<double> busy_us;      // per worker
};
Simulation simulate(const Program& p, double bandwidth_GBps, double task_overhead_us = 1.0,
                    int context = 1024);

/// The text report: tasks and bytes per operator, bytes per worker (min, mean,
/// max, max/mean), waits per task, dependency waits on the critical path and
/// the predicted ms/token at `bandwidth_GBps`.
std::string report(const Program& p, double bandwidth_GBps);

/// Every record of the Program as JSON (header, buffers, ops, tasks with their
/// waits and signals, worker lists).
std::string to_json(const Program& p);

/// Graphviz DOT. per_task = false: one node per operator, an edge where a task
/// of one waits on tasks of the other (labelled with the number of waits);
/// per_task = true: one node per task (meant for tiny models).
std::string to_dot(const Program& p, bool per_task = false);

}  // namespace keel::compiler
