/*
 * version.h - Parley's version: every program built here (parleyd,
 * parleyctl, parley, parley-agent, bench/parley-load) prints
 * "NAME PL_VERSION" for --version.
 */
#ifndef PL_VERSION_H
#define PL_VERSION_H

#define PL_VERSION "0.1.0"

#endif
