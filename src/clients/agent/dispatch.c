/*
 * dispatch.c - head-end commands to handler processes.
 *
 * A payload is a JSON object; its "command" names the handler, which is
 * the executable configured for that name (--handler NAME=PATH) or the
 * file NAME in the handler directory (NAME restricted to [A-Za-z0-9_-]
 * so it cannot leave the directory).  A payload without "command" goes
 * to the handler named "default" when there is one, and is otherwise only
 * acknowledged (the receipt, sent by main.c).
 *
 * The handler runs with the whole payload on stdin and PARLEY_COMMAND,
 * PARLEY_FROM and PARLEY_ID in its environment; what it prints on stdout
 * (up to max_output bytes) is the result: parsed as JSON when it is, a
 * string otherwise.  Past the timeout it is killed (SIGKILL, by its pid).
 * Replies are JSON objects:
 *   {"reply-to": ID, "command": C, "status": "ok"|"failed"|"timeout",
 *    "exit": N, "result": ...}
 *   {"reply-to": ID, "error": "malformed-json"|"bad-request"|
 *    "unknown-command"|"busy", "detail": "..."}
 * All I/O with the child is non-blocking and driven by pl_dispatch_poll,
 * so a slow handler never stalls the XMPP session.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clients/agent/agent.h"
#include "clients/client.h"

struct pl_job {
    pid_t pid;         /* the handler process */
    int in_fd, out_fd; /* its stdin (we write), stdout (we read); -1 closed */
    char *input;       /* payload still to write */
    size_t in_len, in_off;
    char *output; /* collected stdout */
    size_t out_len;
    int truncated;                  /* more than max_output was printed */
    long long deadline;             /* monotonic ms */
    int exited, status;             /* waitpid result */
    int killed;                     /* killed for the timeout */
    char *to, *type, *id, *command; /* where the reply goes */
};

static void reply_error(struct pl_dispatch *d, const char *from,
                        const char *type, const char *id, const char *err,
                        const char *detail)
{
    json_t *r = json_object();
    if (id)
        json_object_set_new(r, "reply-to", json_string(id));
    json_object_set_new(r, "error", json_string(err));
    if (detail)
        json_object_set_new(r, "detail", json_string(detail));
    d->reply(from, type, r, d->ud);
    json_decref(r);
}

static int valid_name(const char *s)
{
    if (!*s || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* The executable for name into buf, or NULL. */
static const char *find_handler(struct pl_dispatch *d, const char *name,
                                char *buf, size_t len)
{
    for (int i = 0; i < d->nhandlers; i++)
        if (!strcmp(d->handlers[i].name, name))
            return d->handlers[i].path;
    if (d->handler_dir && valid_name(name)) {
        snprintf(buf, len, "%s/%s", d->handler_dir, name);
        if (access(buf, X_OK) == 0)
            return buf;
    }
    return NULL;
}

static int start_job(struct pl_dispatch *d, const char *path,
                     const char *command, const char *from, const char *type,
                     const char *id, const char *text)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(out, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        /* The handler gets stdin, stdout and stderr, not the XMPP socket
         * or any other descriptor of the agent. */
        close_range(3, ~0U, 0);
        setenv("PARLEY_COMMAND", command, 1);
        setenv("PARLEY_FROM", from ? from : "", 1);
        setenv("PARLEY_ID", id ? id : "", 1);
        signal(SIGPIPE, SIG_DFL);
        execl(path, path, command, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    d->jobs = realloc(d->jobs, sizeof(*d->jobs) * (size_t)(d->njobs + 1));
    struct pl_job *j = &d->jobs[d->njobs++];
    memset(j, 0, sizeof(*j));
    j->pid = pid;
    j->in_fd = in[1];
    j->out_fd = out[0];
    j->input = strdup(text);
    j->in_len = strlen(text);
    j->deadline = pl_cl_now_ms() + d->timeout_ms;
    j->to = strdup(from ? from : "");
    j->type = type ? strdup(type) : NULL;
    j->id = id ? strdup(id) : NULL;
    j->command = strdup(command);
    return 0;
}

void pl_dispatch_payload(struct pl_dispatch *d, const char *from,
                         const char *type, const char *id, const char *text)
{
    json_error_t e;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    if (!doc) {
        char detail[200];
        snprintf(detail, sizeof(detail), "%s at line %d column %d", e.text,
                 e.line, e.column);
        reply_error(d, from, type, id, "malformed-json", detail);
        return;
    }
    if (!json_is_object(doc)) {
        reply_error(d, from, type, id, "bad-request",
                    "the payload must be a JSON object");
        json_decref(doc);
        return;
    }
    json_t *c = json_object_get(doc, "command");
    const char *command = c ? json_string_value(c) : "default";
    if (!command) {
        reply_error(d, from, type, id, "bad-request",
                    "\"command\" must be a string");
        json_decref(doc);
        return;
    }
    char buf[4096];
    const char *path = find_handler(d, command, buf, sizeof(buf));
    if (!path) {
        if (c)
            reply_error(d, from, type, id, "unknown-command", command);
        json_decref(doc);
        return;
    }
    if (d->njobs >= d->max_jobs) {
        reply_error(d, from, type, id, "busy", "too many commands running");
    } else if (start_job(d, path, command, from, type, id, text) != 0) {
        reply_error(d, from, type, id, "internal-error", strerror(errno));
    }
    json_decref(doc);
}

static void finish_job(struct pl_dispatch *d, struct pl_job *j)
{
    json_t *r = json_object();
    if (j->id)
        json_object_set_new(r, "reply-to", json_string(j->id));
    json_object_set_new(r, "command", json_string(j->command));
    if (j->killed) {
        json_object_set_new(r, "status", json_string("timeout"));
    } else {
        int code = WIFEXITED(j->status) ? WEXITSTATUS(j->status)
                                        : 128 + WTERMSIG(j->status);
        json_object_set_new(r, "status",
                            json_string(code == 0 ? "ok" : "failed"));
        json_object_set_new(r, "exit", json_integer(code));
    }
    json_t *res = NULL;
    if (j->out_len) {
        j->output[j->out_len] = '\0';
        res = json_loads(j->output, JSON_DECODE_ANY, NULL);
        if (!res)
            res = json_stringn(j->output, j->out_len);
        if (!res)
            res = json_string("(output is not UTF-8)");
    }
    if (res)
        json_object_set_new(r, "result", res);
    if (j->truncated)
        json_object_set_new(r, "truncated", json_true());
    d->reply(j->to, j->type, r, d->ud);
    json_decref(r);
}

static void free_job(struct pl_job *j)
{
    if (j->in_fd >= 0)
        close(j->in_fd);
    if (j->out_fd >= 0)
        close(j->out_fd);
    free(j->input);
    free(j->output);
    free(j->to);
    free(j->type);
    free(j->id);
    free(j->command);
}

static void pump(struct pl_dispatch *d, struct pl_job *j)
{
    while (j->in_fd >= 0 && j->in_off < j->in_len) {
        ssize_t n = write(j->in_fd, j->input + j->in_off,
                          j->in_len - j->in_off);
        if (n > 0) {
            j->in_off += (size_t)n;
        } else {
            if (n < 0 && errno == EAGAIN)
                break;
            j->in_off = j->in_len; /* EPIPE: the child stopped reading */
        }
    }
    if (j->in_fd >= 0 && j->in_off >= j->in_len) {
        close(j->in_fd);
        j->in_fd = -1;
    }
    while (j->out_fd >= 0) {
        char buf[4096];
        ssize_t n = read(j->out_fd, buf, sizeof(buf));
        if (n > 0) {
            size_t keep = (size_t)n;
            if (j->out_len + keep > d->max_output) {
                keep = d->max_output - j->out_len;
                j->truncated = 1;
            }
            if (keep) {
                j->output = realloc(j->output, j->out_len + keep + 1);
                memcpy(j->output + j->out_len, buf, keep);
                j->out_len += keep;
            }
        } else if (n == 0 || errno != EAGAIN) {
            close(j->out_fd);
            j->out_fd = -1;
        } else {
            break;
        }
    }
}

void pl_dispatch_poll(struct pl_dispatch *d)
{
    long long now = pl_cl_now_ms();
    for (int i = 0; i < d->njobs;) {
        struct pl_job *j = &d->jobs[i];
        pump(d, j);
        if (!j->exited && waitpid(j->pid, &j->status, WNOHANG) == j->pid)
            j->exited = 1;
        if (!j->exited && now >= j->deadline && !j->killed) {
            kill(j->pid, SIGKILL);
            j->killed = 1;
        }
        /* Done once it exited and its stdout is drained (or it was
         * killed: then whatever it printed so far is reported). */
        if (j->exited && (j->out_fd < 0 || j->killed || now >= j->deadline)) {
            finish_job(d, j);
            free_job(j);
            d->jobs[i] = d->jobs[--d->njobs];
            continue;
        }
        i++;
    }
}

void pl_dispatch_stop(struct pl_dispatch *d)
{
    for (int i = 0; i < d->njobs; i++) {
        struct pl_job *j = &d->jobs[i];
        if (!j->exited) {
            kill(j->pid, SIGKILL);
            waitpid(j->pid, NULL, 0);
        }
        free_job(j);
    }
    free(d->jobs);
    d->jobs = NULL;
    d->njobs = 0;
}
