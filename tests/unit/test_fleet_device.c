/* test_fleet_device.c - device ids of the fleet module, and the
 * parley-agent identity functions (MAC -> localpart, state file). */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/modules/fleet/fleet.h"
#include "unit.h"

/* The agent's identity code is small and pure: built into the test. */
#include "../../src/clients/agent/identity.c"

void test_fleet_device_norm(void)
{
    static const struct {
        const char *in;
        const char *out; /* NULL: refused */
    } cases[] = {
        {"00:1A:2B:3C:4D:5E", "001a2b3c4d5e"},
        {"00-1a-2b-3c-4d-5e", "001a2b3c4d5e"},
        {"001a.2b3c.4d5e", "001a2b3c4d5e"},
        {"001A2B3C4D5E", "001a2b3c4d5e"},
        {"alice", "alice"},
        {"box-1.hall_2", "box-1.hall_2"},
        {"00:1a:2b:3c:4d", NULL},       /* 5 bytes, and ":" is refused */
        {"001a2b3c4d", "001a2b3c4d"},   /* 10 hex: a localpart, not MAC */
        {"00:1a:2b:3c:4d:5e:6f", NULL}, /* colons not allowed otherwise */
        {"Alice", NULL},                /* upper case: not nodeprep'd */
        {"a@b", NULL},
        {"a/b", NULL},
        {"", NULL},
        {"x y", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[80] = "";
        int ok = pl__fleet_device_norm(cases[i].in, out, sizeof(out));
        CHECK_INT(ok, cases[i].out != NULL);
        if (ok && cases[i].out)
            CHECK_STR(out, cases[i].out);
    }
    char small[8];
    CHECK_INT(pl__fleet_device_norm("001a2b3c4d5e", small, sizeof(small)), 0);
    char longname[100];
    memset(longname, 'a', 99);
    longname[99] = '\0';
    char out[128];
    CHECK_INT(pl__fleet_device_norm(longname, out, sizeof(out)), 0);
    CHECK_INT(pl__fleet_is_device_id("001a2b3c4d5e"), 1);
    CHECK_INT(pl__fleet_is_device_id("001A2B3C4D5E"), 0);
    CHECK_INT(pl__fleet_is_device_id("001a2b3c4d5"), 0);
    CHECK_INT(pl__fleet_is_device_id("001a2b3c4d5g"), 0);
    CHECK_INT(pl__fleet_is_device_id("alice"), 0);
}

void test_agent_mac_localpart(void)
{
    char out[13];
    CHECK_INT(pl_agent_mac_localpart("02:AB:cd:00:00:01", out), 0);
    CHECK_STR(out, "02abcd000001");
    CHECK_INT(pl_agent_mac_localpart("02-ab-cd-00-00-01", out), 0);
    CHECK_STR(out, "02abcd000001");
    CHECK_INT(pl_agent_mac_localpart("02abcd000001", out), 0);
    CHECK_INT(pl_agent_mac_localpart("02:ab:cd:00:00", out), -1);
    CHECK_INT(pl_agent_mac_localpart("02:ab:cd:00:00:01:02", out), -1);
    CHECK_INT(pl_agent_mac_localpart("02:ab:cd:00:00:0g", out), -1);
    CHECK_INT(pl_agent_mac_localpart("", out), -1);
    char mac[32];
    CHECK_INT(pl_agent_read_mac("../etc", mac, sizeof(mac)), -1);
    CHECK_INT(pl_agent_read_mac("", mac, sizeof(mac)), -1);
    if (pl_agent_read_mac("lo", mac, sizeof(mac)) == 0)
        CHECK_STR(mac, "00:00:00:00:00:00");
}

void test_agent_state_file(void)
{
    char dir[] = "/tmp/parley-unit-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof(path), "%s/state.json", dir);
    struct pl_agent_state st = {0};
    CHECK_INT(pl_agent_state_load(path, &st), 0); /* absent */
    char secret[65];
    CHECK_INT(pl_agent_secret_new(secret), 0);
    CHECK_INT(strlen(secret), 64);
    st.jid = strdup("02abcd000001@example.org");
    st.secret = strdup(secret);
    st.registered = 1;
    CHECK_INT(pl_agent_state_save(path, &st), 0);
    struct stat sb;
    CHECK_INT(stat(path, &sb), 0);
    CHECK_INT(sb.st_mode & 0777, 0600);
    pl_agent_state_free(&st);
    CHECK(chmod(path, 0644) == 0);
    CHECK_INT(pl_agent_state_load(path, &st), 1);
    CHECK_STR(st.jid, "02abcd000001@example.org");
    CHECK_STR(st.secret, secret);
    CHECK_INT(st.registered, 1);
    CHECK_INT(stat(path, &sb), 0);
    CHECK_INT(sb.st_mode & 0777, 0600); /* tightened on load */
    pl_agent_state_free(&st);
    FILE *f = fopen(path, "w");
    fputs("{\"jid\": \"x@y\"", f);
    fclose(f);
    CHECK_INT(pl_agent_state_load(path, &st), -1); /* malformed */
    f = fopen(path, "w");
    fputs("{\"jid\": \"x@y\"}", f);
    fclose(f);
    CHECK_INT(pl_agent_state_load(path, &st), -1); /* no secret */
    unlink(path);
    rmdir(dir);
}
