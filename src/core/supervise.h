/*
 * supervise.h - parleyd with server.processes > 1: the supervisor that
 * runs the processes, restarts those that die, and passes signals on
 * (doc/cluster.md, "Every core").
 */
#ifndef PL_SUPERVISE_H
#define PL_SUPERVISE_H

#include "config.h"

/*
 * Creates what the processes would otherwise race to create (the
 * self-signed certificates parleyd keeps in data_dir), then runs
 * c->s.processes children, each `argv... --process I` (the same program,
 * /proc/self/exe), until SIGTERM or SIGINT: those are passed on, the
 * children are waited for (SIGKILL after server.stop_timeout seconds),
 * and it returns 0.  SIGHUP and SIGUSR1 are passed on.  A child that dies
 * otherwise is started again after server.restart_delay ms, doubled at
 * each death in a row up to server.restart_delay_max.  Opens no database,
 * no listener, no client connection.  Returns 1 when it cannot start.
 */
int pl_supervise(const struct pl_config *c, int argc, char **argv);

#endif
