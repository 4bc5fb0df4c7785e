// Package reaper lets the agent run as PID 1 (Linux only).
//
// PID 1 inherits every orphaned process and must reap it, or zombies pile
// up. Reaping with wait4(-1) in the same process that runs commands through
// os/exec would race os/exec for its children's exit statuses. So PID 1
// does nothing but supervise: it re-executes the agent as its only direct
// child, forwards termination signals to it, reaps everything that exits,
// and exits with the child's status when the child exits.
package reaper
