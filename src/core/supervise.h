/*
 * supervise.h - parleyd with server.processes > 1: the supervisor that
 * runs the processes, restarts those that die, and passes signals on
 * (doc/cluster.md, "Every core").
 */
#ifndef PL_SUPERVISE_H
#define PL_SUPERVISE_H

#include <signal.h>
#include <sys/types.h>

#include "config.h"

/* A process tells its supervisor it is ready (its listeners are open). */
#define PL_SIG_READY (SIGRTMIN)
/* The supervisor tells a process to stop accepting (close its listeners,
 * keep its sessions): the first step of a rolling restart.  SIGUSR2 then
 * drains it (doc/cluster.md, "Rolling restart"). */
#define PL_SIG_QUIESCE (SIGRTMIN + 1)

/*
 * Creates what the processes would otherwise race to create (the
 * self-signed certificates parleyd keeps in data_dir), then runs
 * c->s.processes children, each `argv... --process I` (the same program,
 * /proc/self/exe), until SIGTERM or SIGINT: those are passed on, the
 * children are waited for (SIGKILL after server.stop_timeout seconds),
 * and it returns 0.  SIGHUP and SIGUSR1 are passed on.  SIGUSR2 is a
 * rolling restart: N new processes in the other half of 2N slots
 * (--process N..2N-1, then 0..N-1 again), and once each has said
 * PL_SIG_READY, the old ones get PL_SIG_QUIESCE, then SIGUSR2 one at a
 * time (each drains its sessions and exits); a new process that dies
 * before it is ready abandons the restart (the old ones keep serving).  A child that dies
 * otherwise is started again after server.restart_delay ms, doubled at
 * each death in a row up to server.restart_delay_max.  Opens no database,
 * no listener, no client connection.  Returns 1 when it cannot start.
 */
int pl_supervise(const struct pl_config *c, int argc, char **argv);

/* In a process of a supervisor (--process I): tells it this process is
 * ready (PL_SIG_READY); nothing otherwise. */
void pl_supervise_ready(void);
/* The supervisor of this process (its parent, which named itself in
 * PARLEY_SUPERVISOR when it started it), or 0: a process started by hand
 * with --process never signals its shell. */
pid_t pl_supervisor_pid(void);

#endif
